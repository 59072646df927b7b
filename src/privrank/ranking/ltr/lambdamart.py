r"""LambdaMART: gradient-boosted trees with LambdaRank gradients, through LightGBM.

Each boosting iteration fits a regression tree to the LambdaRank gradients of every row,

.. math:: \lambda_i = \sum_{j : l_j \ne l_i} \pm\,\sigma\,
          \frac{|\Delta \mathrm{NDCG}_{ij}|}{1 + e^{\sigma (s_i - s_j)}},

(the pairwise logistic gradient of rows :math:`i, j` of one group, weighted by how much swapping
them changes the group's NDCG), so the ensemble optimises NDCG directly (Burges 2010). LightGBM
(``objective="lambdarank"``) is the implementation; the defaults are the parameters of LightGBM's
own ``examples/lambdarank/train.conf`` (100 trees, learning rate 0.1, 31 leaves, at least 50 rows
and a hessian sum of 5 per leaf, 255 bins, bagging 0.9 every iteration), so running LightGBM on
that example with its config and fitting this ranker on the same files give the same model.

**Differential privacy: not offered.** LightGBM has no user-level DP training: its histograms,
split gains and leaf values are exact functions of every row, and no mechanism in LightGBM
bounds one user's influence on them or adds calibrated noise. What *can* be private around it is
the data it is given: features and labels released under DP beforehand (e.g. noisy counts, or
label DP from randomised response), whose guarantee then covers the trees by post-processing;
that is a property of the features, not of this ranker. A fit with a privacy spec is refused; use
the neural ranker (``listwise``), which trains with user-level DP-SGD.

**A base score** (``base_feature``, ``base_weight``, ``base_blend``): the ensemble can start from
a given order instead of from zero. With :math:`b(x) = w \cdot x_{\text{base}} + \sum_c w_c x_c`
(the sum over the ``base_blend`` columns, empty by default) the score is
:math:`s(x) = b(x) + \sum_t \eta f_t(x)` and the trees are fitted to the LambdaRank gradients
at :math:`s` (LightGBM's ``init_score``). The number of trees is chosen on the validation part,
and zero trees is a candidate: when no iteration beats the base order's validation NDCG at the
first cutoff, the ranker *is* the base order. So a two-stage ranker started from its best
retriever's rank cannot do worse than that retriever on its own validation groups.

The learned model is LightGBM's text model format (stored as bytes in the ranker's safetensors
file, checksummed); no pickle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from privrank.data.query_groups import QueryGroups
from privrank.errors import ConfigError
from privrank.ranking.ltr._base import LTRFitOptions, LTRRanker, RankerConfig, register_ranker
from privrank.ranking.ltr._compiled_trees import CompiledTrees, compile_trees
from privrank.ranking.ltr._ndcg import group_ndcg

__all__ = ["LambdaMART", "LambdaMARTConfig"]


class LambdaMARTConfig(RankerConfig):
    r"""LightGBM lambdarank parameters (defaults: LightGBM's ``examples/lambdarank``).

    Attributes:
        num_iterations: Boosting iterations (trees).
        learning_rate: Shrinkage.
        num_leaves: Leaves per tree.
        min_data_in_leaf: Rows per leaf, at least.
        min_sum_hessian_in_leaf: Hessian sum per leaf, at least.
        max_bin: Histogram bins per feature.
        bagging_fraction: Share of rows each iteration samples.
        bagging_freq: Bag every this many iterations (0: no bagging).
        feature_fraction: Share of features each tree samples.
        lambdarank_truncation_level: Rows of each group's top whose pairs get gradients.
        eval_at: NDCG cutoffs evaluated on the validation part.
        early_stopping_rounds: Stop when the validation NDCG at the first cutoff has not improved
            for this many iterations (``None``: train every iteration).
        lambda_l2: L2 regularisation of leaf values.
        base_feature: Name of the feature column the ensemble starts from (``None``: from 0).
        base_weight: Its weight ``w`` in the base score ``w · x_base`` (negative for a rank).
        base_blend: More columns added to the base score, ``{name: weight}``: the base is
            :math:`w \cdot x_{\text{base}} + \sum_c w_c x_c` (a linear blend, e.g. of several
            retrievers' scores). Needs ``base_feature``.
    """

    num_iterations: int = Field(100, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_data_in_leaf: int = Field(50, ge=1)
    min_sum_hessian_in_leaf: float = Field(5.0, ge=0)
    max_bin: int = Field(255, ge=2)
    bagging_fraction: float = Field(0.9, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    feature_fraction: float = Field(1.0, gt=0, le=1)
    lambdarank_truncation_level: int = Field(30, ge=1)
    eval_at: tuple[int, ...] = (1, 3, 5)
    early_stopping_rounds: int | None = Field(None, ge=1)
    lambda_l2: float = Field(0.0, ge=0)
    base_feature: str | None = None
    base_weight: float = 1.0
    base_blend: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _blend_needs_base(self) -> LambdaMARTConfig:
        if self.base_blend and self.base_feature is None:
            raise ValueError("base_blend needs base_feature (the blend adds to a base column)")
        return self


#: LightGBM 4's default seeds (its ``seed`` parameter, when set, replaces all of them).
_LIGHTGBM_SEEDS = {
    "data_random_seed": 1,
    "feature_fraction_seed": 2,
    "bagging_seed": 3,
    "drop_seed": 4,
    "objective_seed": 5,
    "extra_seed": 6,
}


def lightgbm_params(config: LambdaMARTConfig, seed: int, threads: int) -> dict[str, Any]:
    """The LightGBM parameters of a config (what :class:`LambdaMART` trains with).

    ``seed`` offsets each of LightGBM's default seeds, so ``seed=0`` trains exactly as LightGBM
    does with no seed set.
    """
    params: dict[str, Any] = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": list(config.eval_at),
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "min_sum_hessian_in_leaf": config.min_sum_hessian_in_leaf,
        "max_bin": config.max_bin,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": config.bagging_freq,
        "feature_fraction": config.feature_fraction,
        "lambdarank_truncation_level": config.lambdarank_truncation_level,
        "lambda_l2": config.lambda_l2,
        # LightGBM's default seeds offset by ``seed``: seed 0 is exactly LightGBM's defaults (so
        # a default fit reproduces LightGBM run with a config that sets no seed).
        **{name: default + seed for name, default in _LIGHTGBM_SEEDS.items()},
        "deterministic": True,
        "verbosity": -1,
    }
    if threads:
        params["num_threads"] = threads
    return params


@register_ranker("lambdamart")
class LambdaMART(LTRRanker):
    """LambdaMART through LightGBM (see the module docstring for the maths and for privacy).

    Attributes:
        booster_: The fitted ``lightgbm.Booster``.
        compiled_: The same trees as flat arrays for the numba scorer
            (:mod:`~privrank.ranking.ltr._compiled_trees`: LightGBM's scores, bit for bit, in
            0.4 of its time on a 224-tree two-stage ranker), or ``None`` when they cannot be
            scored that way; :meth:`score` then uses LightGBM.
    """

    Config = LambdaMARTConfig
    config: LambdaMARTConfig

    def _privacy_refusal(self) -> str:
        return (
            "LambdaMART (LightGBM) cannot train with user-level differential privacy: LightGBM's "
            "histograms, split gains and leaf values are exact functions of every row and it has "
            "no mechanism that bounds a user's influence or adds calibrated noise. Refusing to "
            "train it privately. Train the neural 'listwise' ranker with DP-SGD instead, or give "
            "LightGBM features and labels that were themselves released under DP (outside this "
            "ranker)."
        )

    def _fit(
        self, train: QueryGroups, validation: QueryGroups | None, options: LTRFitOptions
    ) -> None:
        import lightgbm as lgb

        config = self.config
        params = lightgbm_params(config, options.seed, options.threads)
        self.base_column_ = _base_column(config, train.feature_names)
        self.blend_columns_ = _blend_columns(config, train.feature_names)
        train_set = lgb.Dataset(
            train.features,
            label=train.labels,
            group=train.group_sizes,
            init_score=self._base(train.features),
            free_raw_data=False,
        )
        valid_sets, callbacks = [], []
        evals: dict[str, Any] = {}
        if validation is not None:
            valid_sets = [
                lgb.Dataset(
                    validation.features,
                    label=validation.labels,
                    group=validation.group_sizes,
                    init_score=self._base(validation.features),
                    reference=train_set,
                )
            ]
            callbacks.append(lgb.record_evaluation(evals))
            if config.early_stopping_rounds is not None:
                callbacks.append(
                    lgb.early_stopping(
                        config.early_stopping_rounds, first_metric_only=True, verbose=False
                    )
                )
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=config.num_iterations,
            valid_sets=valid_sets,
            valid_names=["validation"][: len(valid_sets)],
            callbacks=callbacks,
        )
        self.booster_ = booster
        self.compiled_: CompiledTrees | None = None
        best = int(booster.best_iteration or booster.current_iteration())
        self.info_["best_iteration"] = best
        self.info_["lightgbm"] = lgb.__version__
        if evals:
            curves = evals["validation"]
            self.info_["validation"] = {name: float(v[best - 1]) for name, v in curves.items()}
            if self.base_column_ is not None:
                assert validation is not None
                first = f"ndcg@{config.eval_at[0]}"
                base_scores = self._base(validation.features)
                assert base_scores is not None
                base_ndcg = group_ndcg(
                    base_scores,
                    validation.labels,
                    validation.group_sizes,
                    config.eval_at[0],
                )
                self.info_["base_validation"] = {first: base_ndcg}
                if base_ndcg >= self.info_["validation"][first]:
                    self.info_["best_iteration"] = 0  # no tree beats the base order
                    self.info_["validation"] = {first: base_ndcg}
            if options.progress is not None:
                for it in range(len(next(iter(curves.values())))):
                    options.progress(it + 1, {n: float(v[it]) for n, v in curves.items()})
        self._compile()

    def _base(self, features: np.ndarray) -> np.ndarray | None:
        if self.base_column_ is None:
            return None
        base = self.config.base_weight * np.asarray(features[:, self.base_column_], np.float64)
        for column, weight in self.blend_columns_:
            base += weight * np.asarray(features[:, column], np.float64)
        return base

    def _score(self, features: np.ndarray, threads: int | None = None) -> np.ndarray:
        best = self.info_.get("best_iteration")
        base = self._base(features)
        if best == 0:  # zero trees: the base order (see the module docstring)
            assert base is not None
            return base
        compiled = self.compiled_.predict(features, threads) if self.compiled_ else None
        if compiled is not None:
            return compiled if base is None else compiled + base
        # LightGBM sets the calling thread's OpenMP threads from num_threads on every predict
        extra: dict[str, Any] = {} if threads is None else {"num_threads": threads}
        trees = np.asarray(self.booster_.predict(features, num_iteration=best or None, **extra))
        return trees if base is None else trees + base

    def state(self) -> dict[str, np.ndarray]:
        """LightGBM's text model, as UTF-8 bytes (``lightgbm.model_text``)."""
        text = self.booster_.model_to_string()
        return {"lightgbm.model_text": np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        import lightgbm as lgb

        if set(state) != {"lightgbm.model_text"}:
            raise ValueError(f"expected the array lightgbm.model_text, got {sorted(state)}")
        text = np.asarray(state["lightgbm.model_text"], dtype=np.uint8).tobytes().decode("utf-8")
        try:
            self.booster_ = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"not a LightGBM model: {exc}") from exc
        self.base_column_ = _base_column(self.config, self.feature_names_)
        self.blend_columns_ = _blend_columns(self.config, self.feature_names_)
        if self.booster_.num_feature() != self.n_features_:
            raise ValueError(
                f"the LightGBM model has {self.booster_.num_feature()} features, the header "
                f"{self.n_features_}"
            )
        self._compile()

    def _compile(self) -> None:
        """Set :attr:`compiled_` from the trees :meth:`_score` uses (the best iteration's)."""
        best = self.info_.get("best_iteration")
        self.compiled_ = (
            compile_trees(self.booster_.dump_model(num_iteration=best or None)) if best else None
        )


def _base_column(config: LambdaMARTConfig, names: tuple[str, ...] | list[str]) -> int | None:
    """The column of ``config.base_feature`` (``None`` without one).

    Raises:
        ConfigError: The feature is not one of ``names``.
    """
    if config.base_feature is None:
        return None
    if config.base_feature not in names:
        raise ConfigError(
            f"LambdaMART's base_feature {config.base_feature!r} is not a feature column; the "
            f"columns are {', '.join(names)}"
        )
    return list(names).index(config.base_feature)


def _blend_columns(
    config: LambdaMARTConfig, names: tuple[str, ...] | list[str]
) -> list[tuple[int, float]]:
    """``(column, weight)`` of every ``config.base_blend`` entry, in the config's order.

    Raises:
        ConfigError: A blended feature is not one of ``names``.
    """
    missing = [name for name in config.base_blend if name not in names]
    if missing:
        raise ConfigError(
            f"LambdaMART's base_blend names {', '.join(map(repr, missing))}, not feature "
            f"columns; the columns are {', '.join(names)}"
        )
    return [(list(names).index(name), float(w)) for name, w in config.base_blend.items()]
