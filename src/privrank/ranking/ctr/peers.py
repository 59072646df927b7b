"""Peers run in the same harness and on the same split: LightGBM, deepctr-torch's DeepFM and DCN.

They are :class:`~privrank.ranking.ctr.base.CTRRanker` objects like privrank's own: the same
feature vocabulary (fitted on train), the same early stopping on the validation log loss, the
same calibration and the same save format, so that a comparison differs only in the model.

- ``lightgbm`` (the ``rank`` extra): gradient-boosted trees, ``objective="binary"``, every
  categorical field given to LightGBM as a categorical feature (its local code), numeric fields
  as they are; early stopping on the validation ``binary_logloss`` (``lightgbm.early_stopping``).
  Saved as LightGBM's own text model (``lightgbm.txt``, checksummed).
- ``deepctr-deepfm`` and ``deepctr-dcn`` (the ``ctrpeers`` extra): ``deepctr_torch.models.DeepFM``
  and ``DCN`` over one ``SparseFeat`` per field (its local codes) and one ``DenseFeat`` per
  numeric field, trained by deepctr-torch's own ``fit`` one epoch at a time so that the epoch
  with the lowest validation log loss is kept (as privrank's models). Weights saved through
  safetensors.
"""

from __future__ import annotations

import copy
import importlib
import time
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from privrank.data.features import FeatureTable
from privrank.errors import ConfigError
from privrank.metrics.ctr import auc, log_loss
from privrank.models import FitOptions
from privrank.ranking.ctr.base import CTRConfig, CTRRanker

__all__ = [
    "DeepCTRConfig",
    "DeepCTRDCN",
    "DeepCTRDCNConfig",
    "DeepCTRDeepFM",
    "LightGBMConfig",
    "LightGBMRanker",
]


def require(module: str, extra: str) -> Any:
    """Import an optional peer's module, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"this peer needs {module.split('.')[0]}: pip install 'privrank[{extra}]'"
        ) from exc


def _local(rows: FeatureTable) -> np.ndarray:
    """``[n, F]`` codes local to each field (the shared-space offset removed)."""
    return rows.codes - rows.vocabulary.offsets[None, :]


class LightGBMConfig(CTRConfig):
    """LightGBM's parameters (see its documentation for each).

    Attributes:
        learning_rate: Shrinkage.
        num_leaves: Leaves per tree.
        min_data_in_leaf: Smallest leaf.
        num_boost_round: Most trees.
        early_stopping_rounds: Rounds without a lower validation log loss before stopping.
        feature_fraction: Features sampled per tree.
        lambda_l2: L2 regularisation of leaf values.
        cat_smooth: Smoothing of categorical splits.
        max_cat_to_onehot: Categories up to which one-vs-rest splits are used.
    """

    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=127, ge=2)
    min_data_in_leaf: int = Field(default=20, ge=1)
    num_boost_round: int = Field(default=2000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    feature_fraction: float = Field(default=1.0, gt=0, le=1)
    lambda_l2: float = Field(default=0.0, ge=0)
    cat_smooth: float = Field(default=10.0, ge=0)
    max_cat_to_onehot: int = Field(default=4, ge=1)


class LightGBMRanker(CTRRanker):
    """LightGBM binary classifier over categorical codes (the ``rank`` extra)."""

    name: ClassVar[str] = "lightgbm"
    Config = LightGBMConfig
    config: LightGBMConfig

    def _dataset(self, rows: FeatureTable) -> tuple[np.ndarray, list[str], list[str]]:
        v = rows.vocabulary
        names = [f"c_{n}" for n in v.field_names] + [f"n_{n}" for n in v.numeric]
        x = np.hstack([_local(rows).astype(np.float64), rows.numeric.astype(np.float64)])
        return x, names, names[: len(v.field_names)]

    def _fit(self, train: FeatureTable, validation: FeatureTable, options: FitOptions,
             report: Any) -> None:  # fmt: skip
        lgb = require("lightgbm", "rank")
        c = self.config
        x, names, categorical = self._dataset(train)
        xv, _, _ = self._dataset(validation)
        dtrain = lgb.Dataset(x, train.labels, feature_name=names, categorical_feature=categorical,
                             free_raw_data=True)  # fmt: skip
        dvalid = lgb.Dataset(xv, validation.labels, reference=dtrain)
        params = {
            "objective": "binary",
            "metric": ["binary_logloss", "auc"],
            "learning_rate": c.learning_rate,
            "num_leaves": c.num_leaves,
            "min_data_in_leaf": c.min_data_in_leaf,
            "feature_fraction": c.feature_fraction,
            "lambda_l2": c.lambda_l2,
            "cat_smooth": c.cat_smooth,
            "max_cat_to_onehot": c.max_cat_to_onehot,
            "seed": options.seed,
            "deterministic": True,
            "num_threads": options.resolved_threads(),
            "verbosity": -1,
        }
        evals: dict[str, Any] = {}
        self.booster_ = lgb.train(
            params,
            dtrain,
            num_boost_round=c.num_boost_round,
            valid_sets=[dvalid],
            valid_names=["validation"],
            callbacks=[
                lgb.early_stopping(c.early_stopping_rounds, first_metric_only=True, verbose=False),
                lgb.record_evaluation(evals),
            ],
        )
        losses = evals["validation"]["binary_logloss"]
        aucs = evals["validation"]["auc"]
        for i in range(0, len(losses), 50):  # one report per 50 trees
            report(i + 1, c.num_boost_round, None, val_log_loss=losses[i], val_auc=aucs[i])
        best = self.booster_.best_iteration or len(losses)
        report(best, c.num_boost_round, None, val_log_loss=losses[best - 1],
               val_auc=aucs[best - 1])  # fmt: skip

    def _predict(self, rows: FeatureTable) -> np.ndarray:
        x, _, _ = self._dataset(rows)
        return np.asarray(
            self.booster_.predict(x, num_iteration=self.booster_.best_iteration or None),
            dtype=np.float64,
        )

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
        text = self.booster_.model_to_string(num_iteration=self.booster_.best_iteration or None)
        return {}, {"lightgbm.txt": text}, {"best_iteration": self.booster_.best_iteration}

    def _restore(self, arrays: dict[str, np.ndarray], files: dict[str, str],
                 extra: dict[str, Any]) -> None:  # fmt: skip
        lgb = require("lightgbm", "rank")
        self.booster_ = lgb.Booster(model_str=files["lightgbm.txt"])
        self.booster_.best_iteration = 0  # the text holds the best trees only


class DeepCTRConfig(CTRConfig):
    """deepctr-torch's training options (its own names in parentheses).

    Attributes:
        embedding_dim: Embedding size per field (``SparseFeat.embedding_dim``).
        hidden: DNN widths (``dnn_hidden_units``).
        dropout: DNN dropout (``dnn_dropout``).
        batch_norm: Batch normalisation in the DNN (``dnn_use_bn``).
        l2_reg_embedding: L2 on embeddings (``l2_reg_embedding``).
        lr: Adam learning rate.
        batch_size: Rows per mini-batch.
        epochs: Most epochs.
        patience: Epochs without a lower validation log loss before stopping.
        max_seconds: Stop after the first epoch that ends past this budget (``None``: none).
    """

    embedding_dim: int = Field(default=16, ge=1)
    hidden: tuple[int, ...] = Field(default=(400, 400, 400), min_length=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    batch_norm: bool = False
    l2_reg_embedding: float = Field(default=1e-5, ge=0)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=1024, ge=1)
    epochs: int = Field(default=50, ge=1)
    patience: int = Field(default=2, ge=1)
    max_seconds: float | None = Field(default=None, gt=0)


class DeepCTRDCNConfig(DeepCTRConfig):
    """deepctr-torch DCN; ``cross_num`` cross layers, ``cross_parameterization``."""

    cross_num: int = Field(default=3, ge=1)
    cross_parameterization: str = Field(default="matrix", pattern="^(vector|matrix)$")


class _DeepCTRPeer(CTRRanker):
    config: DeepCTRConfig

    def _columns(self) -> list[Any]:
        inputs = require("deepctr_torch.inputs", "ctrpeers")
        assert self.vocabulary_ is not None
        v = self.vocabulary_
        columns: list[Any] = [
            inputs.SparseFeat(f"c{j}", size, embedding_dim=self.config.embedding_dim)
            for j, size in enumerate(v.field_sizes)
        ]
        columns += [inputs.DenseFeat(f"n{j}", 1) for j in range(len(v.numeric))]
        return columns

    def _inputs(self, rows: FeatureTable) -> dict[str, np.ndarray]:
        local = _local(rows)
        out = {f"c{j}": local[:, j] for j in range(local.shape[1])}
        out.update({f"n{j}": rows.numeric[:, j] for j in range(rows.numeric.shape[1])})
        return out

    def _build(self, seed: int) -> Any:
        raise NotImplementedError

    def _fit(self, train: FeatureTable, validation: FeatureTable, options: FitOptions,
             report: Any) -> None:  # fmt: skip
        import torch

        c = self.config
        torch.manual_seed(options.seed)
        np.random.seed(options.seed)  # deepctr-torch shuffles with numpy's global generator
        previous = torch.get_num_threads()
        torch.set_num_threads(options.resolved_threads())
        try:
            self.network_ = self._build(options.seed)
            optimizer = torch.optim.Adam(self.network_.parameters(), lr=c.lr)
            self.network_.compile(optimizer, "binary_crossentropy")
            x, xv = self._inputs(train), self._inputs(validation)
            best, best_state, stale = np.inf, None, 0
            started = time.perf_counter()
            for epoch in range(1, c.epochs + 1):
                history = self.network_.fit(x, train.labels, batch_size=c.batch_size, epochs=1,
                                            verbose=0, shuffle=True)  # fmt: skip
                p = self._predict(validation)
                loss = log_loss(validation.labels, p)
                train_loss = history.history.get("loss", [float("nan")])[-1]
                report(epoch, c.epochs, float(train_loss), val_log_loss=loss,
                       val_auc=auc(validation.labels, p))  # fmt: skip
                if loss < best - 1e-6:
                    best, best_state, stale = loss, copy.deepcopy(self.network_.state_dict()), 0
                else:
                    stale += 1
                out_of_time = c.max_seconds is not None and (
                    time.perf_counter() - started > c.max_seconds
                )
                if stale >= c.patience or out_of_time:
                    break
            if best_state is not None:
                self.network_.load_state_dict(best_state)
            del x, xv
        finally:
            torch.set_num_threads(previous)

    def _predict(self, rows: FeatureTable) -> np.ndarray:
        p = self.network_.predict(self._inputs(rows), batch_size=65536)
        return np.clip(np.asarray(p, dtype=np.float64).ravel(), 0.0, 1.0)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
        state = self.network_.state_dict()
        return {k: v.detach().cpu().numpy() for k, v in state.items()}, {}, {}

    def _restore(self, arrays: dict[str, np.ndarray], files: dict[str, str],
                 extra: dict[str, Any]) -> None:  # fmt: skip
        import torch

        self.network_ = self._build(0)
        self.network_.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
        self.network_.eval()


class DeepCTRDeepFM(_DeepCTRPeer):
    """deepctr-torch's DeepFM (the ``ctrpeers`` extra)."""

    name: ClassVar[str] = "deepctr-deepfm"
    Config = DeepCTRConfig

    def _build(self, seed: int) -> Any:
        models = require("deepctr_torch.models", "ctrpeers")
        c = self.config
        columns = self._columns()
        return models.DeepFM(
            columns, columns, dnn_hidden_units=c.hidden, dnn_dropout=c.dropout,
            dnn_use_bn=c.batch_norm, l2_reg_embedding=c.l2_reg_embedding, seed=seed,
            task="binary", device="cpu",
        )  # fmt: skip


class DeepCTRDCN(_DeepCTRPeer):
    """deepctr-torch's DCN (the ``ctrpeers`` extra)."""

    name: ClassVar[str] = "deepctr-dcn"
    Config = DeepCTRDCNConfig
    config: DeepCTRDCNConfig

    def _build(self, seed: int) -> Any:
        models = require("deepctr_torch.models", "ctrpeers")
        c = self.config
        columns = self._columns()
        return models.DCN(
            columns, columns, cross_num=c.cross_num,
            cross_parameterization=c.cross_parameterization, dnn_hidden_units=c.hidden,
            dnn_dropout=c.dropout, dnn_use_bn=c.batch_norm,
            l2_reg_embedding=c.l2_reg_embedding, seed=seed, task="binary", device="cpu",
        )  # fmt: skip
