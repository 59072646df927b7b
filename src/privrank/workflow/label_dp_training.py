"""Train a click model on a synthetic ad log with label DP, spending from the ledger.

:func:`train_click_model` is what ``privrank ads train`` runs:

1. read the log's feature columns, clicks and user ids (the first ``max_rows`` rows, in time
   order);
2. cap every user at ``max_rows_per_user`` rows (their first rows; the others are left out of
   training and counted): the release is then ``C·ε``-label-DP per user (group privacy);
3. reserve ``C·ε`` (δ = 0) in the ledger (:func:`privrank.workflow.spend.spend_release`);
4. randomise the labels and train (:func:`~privrank.privacy.label_dp.multi_stage_train` with a
   LightGBM trainer; one stage is plain randomised response on every row);
5. save the model (LightGBM text format) with its guarantee, then commit the spend.

ε = inf trains on the true labels and spends nothing.

Between stages the prior of stage t is the model of stage t − 1 with the randomised response
of its uniform-prior labels inverted (:class:`~privrank.ranking.gbdt_click.GBDTClickModel`'s
``label_keep``), i.e. an estimate of the true click probability, as RRWithPrior expects.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from privrank.data.synthetic_ads import FEATURE_COLUMNS, read_ad_log
from privrank.errors import ConfigError
from privrank.privacy._contribution import first_rows_per_user
from privrank.privacy.label_dp import (
    LabelDPGuarantee,
    RRWithPriorMechanism,
    StageReport,
    multi_stage_train,
    posterior_train,
)
from privrank.ranking.gbdt_click import GBDTClickConfig, GBDTClickModel
from privrank.workflow.spend import Spend, spend_release

__all__ = [
    "CATEGORICAL_COLUMNS",
    "LabelDPMethod",
    "LabelDPResult",
    "fit_label_dp",
    "stage_fractions",
    "train_click_model",
]

#: Feature columns of the synthetic log that LightGBM treats as categorical (all but the
#: ordered ones: hour of day and slot position).
CATEGORICAL_COLUMNS = tuple(c for c in FEATURE_COLUMNS if c not in ("hour", "position"))


#: How the noisy labels are used: ``lp-mst`` (RRWithPrior in ``stages`` stages; 1 stage is plain
#: randomised response) or ``rr-posterior`` (randomised response, then every row's posterior
#: under a prior cross-fitted on the other folds:
#: :func:`~privrank.privacy.label_dp.posterior_train`).
LabelDPMethod = Literal["lp-mst", "rr-posterior"]


def stage_fractions(stages: int) -> tuple[float, ...]:
    """Equal parts for ``stages`` stages (1: plain randomised response on every row)."""
    if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= 10:
        raise ConfigError(f"stages must be an integer in 1..10. Got {stages!r}")
    return tuple([1.0 / stages] * stages)


@dataclass
class LabelDPResult:
    """A label-DP fit: the model, its guarantee, and what happened.

    Attributes:
        model: The fitted click model.
        guarantee: The guarantee (``None`` for ε = inf).
        stages: Per stage: rows, agreement of noisy with true labels, mean k*.
        rows: Rows trained on (after the per-user cap).
        dropped: Rows left out by the per-user cap.
        seconds: Wall time of the fit.
        spend: The ledger spend (``None`` when nothing was spent).
    """

    model: GBDTClickModel
    guarantee: LabelDPGuarantee | None
    stages: list[StageReport] = field(default_factory=list)
    rows: int = 0
    dropped: int = 0
    seconds: float = 0.0
    spend: Spend | None = None


def fit_label_dp(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    epsilon: float,
    *,
    stages: int = 1,
    config: GBDTClickConfig | None = None,
    seed: int = 0,
    noise_rng: np.random.Generator | None = None,
    feature_names: Sequence[str] = FEATURE_COLUMNS,
    categorical: Sequence[str] = CATEGORICAL_COLUMNS,
    on_stage: Callable[[StageReport], None] | None = None,
    method: LabelDPMethod = "lp-mst",
    folds: int = 2,
    rounds: int = 1,
) -> tuple[GBDTClickModel, LabelDPGuarantee | None, list[StageReport]]:
    """Label-DP LightGBM on in-memory columns (spends nothing: the caller spends).

    Rows are shuffled (``seed``) before they are cut into stages (or folds). With ``lp-mst``
    the returned model is the last stage's; with one stage its outputs are calibrated by
    inverting the randomised response. With ``rr-posterior`` (``stages`` unused) the model is
    trained on every row's posterior (``folds``, ``rounds``: :func:`posterior_train`) and
    estimates the true click probability directly. ``noise_rng`` draws the label noise
    (default: fresh OS entropy). Both are ε-label-DP: each label is randomised exactly once.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    order = np.random.default_rng(seed).permutation(n)
    shuffled = {name: np.asarray(features[name])[order] for name in feature_names}
    y = labels[order]
    fractions = stage_fractions(stages)
    model_config = config or GBDTClickConfig(seed=seed)
    reports: list[StageReport] = []

    def record(report: StageReport) -> None:
        reports.append(report)
        if on_stage is not None:
            on_stage(report)

    if math.isinf(epsilon):
        model = GBDTClickModel(feature_names, categorical, model_config).fit(shuffled, y)
        return model, None, reports
    mechanism = RRWithPriorMechanism(epsilon, n_classes=2)
    keep = mechanism.calibrate(epsilon, 0.0, "pld")
    first_stage_end = round(fractions[0] * n)
    models: list[GBDTClickModel] = []

    def trainer(rows: np.ndarray, noisy: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        uniform_only = rows.size <= first_stage_end  # only stage-1 (uniform-prior) labels
        model = GBDTClickModel(feature_names, categorical, model_config).fit(
            {name: column[rows] for name, column in shuffled.items()},
            noisy,
            label_keep=keep if uniform_only else None,
        )
        models.append(model)

        def predict(query: np.ndarray) -> np.ndarray:
            p = model.predict_ctr({name: column[query] for name, column in shuffled.items()})
            return np.column_stack([1.0 - p, p])

        return predict

    rng = noise_rng if noise_rng is not None else np.random.default_rng()
    if method == "rr-posterior":

        def soft_trainer(
            rows: np.ndarray, targets: np.ndarray, debias: float | None
        ) -> Callable[[np.ndarray], np.ndarray]:
            model = GBDTClickModel(feature_names, categorical, model_config).fit(
                {name: column[rows] for name, column in shuffled.items()},
                targets,
                label_keep=debias,
                soft_labels=debias is None,
            )
            models.append(model)
            return lambda query: model.predict_ctr(
                {name: column[query] for name, column in shuffled.items()}
            )

        posterior_train(
            y, soft_trainer, mechanism, rng, folds=folds, rounds=rounds, on_stage=record
        )
        return models[-1], mechanism.guarantee(stages=1), reports
    if method != "lp-mst":
        raise ConfigError(f"method must be 'lp-mst' or 'rr-posterior'. Got {method!r}")
    multi_stage_train(y, trainer, mechanism, rng, stage_fractions=fractions, on_stage=record)
    return models[-1], mechanism.guarantee(stages=stages), reports


def train_click_model(
    log: str | Path,
    out: str | Path,
    *,
    epsilon: float,
    stages: int = 1,
    method: LabelDPMethod = "lp-mst",
    folds: int = 2,
    max_rows_per_user: int = 20,
    max_rows: int | None = None,
    budget_key: str | None = None,
    ledger_url: str | None = None,
    config: GBDTClickConfig | None = None,
    seed: int = 0,
    on_stage: Callable[[StageReport], None] | None = None,
) -> LabelDPResult:
    """The steps of the module docstring; returns what was trained and spent.

    Raises:
        ConfigError: A private fit (finite ε) without ``budget_key``.
        PrivacyBudgetExceeded: Before any label is read into training, when the budget does
            not cover ``C·ε``.
    """
    if math.isfinite(epsilon) and not budget_key:
        raise ConfigError("a label-DP fit spends from the ledger: pass a budget key")
    started = time.perf_counter()
    table = read_ad_log(log, [*FEATURE_COLUMNS, "user_id", "click"], max_rows=max_rows)
    keep = first_rows_per_user(table.column("user_id").to_numpy(), max_rows_per_user)
    columns = {name: table.column(name).to_numpy()[keep] for name in FEATURE_COLUMNS}
    labels = table.column("click").to_numpy()[keep].astype(np.int64)
    del table
    description = (
        f"label-DP click model ({method}, {stages} stage(s), ε={epsilon:g} per label, "
        f"≤{max_rows_per_user} rows a user) on {Path(log).name}"
    )

    def fit(spend: Spend | None) -> LabelDPResult:
        model, guarantee, reports = fit_label_dp(
            columns,
            labels,
            epsilon,
            stages=stages,
            config=config,
            seed=seed,
            on_stage=on_stage,
            method=method,
            folds=folds,
        )
        if guarantee is not None:
            guarantee = RRWithPriorMechanism(epsilon).guarantee(
                stages if method == "lp-mst" else 1, max_rows_per_user
            )
        extra: dict[str, Any] = {
            "label_dp": None if guarantee is None else guarantee.to_dict(),
            "training": {
                "log": str(log),
                "rows": int(labels.size),
                "dropped_by_user_cap": int((~keep).sum()),
                "max_rows_per_user": max_rows_per_user,
                "method": method,
                "folds": folds if method == "rr-posterior" else None,
                "stages": [vars(r) for r in reports],
                "seed": seed,
            },
            "spend": None if spend is None else spend.to_dict(),
        }
        model.save(out, extra)
        return LabelDPResult(
            model=model,
            guarantee=guarantee,
            stages=reports,
            rows=int(labels.size),
            dropped=int((~keep).sum()),
            seconds=time.perf_counter() - started,
            spend=spend,
        )

    if math.isinf(epsilon):
        return fit(None)
    assert budget_key is not None
    user_epsilon = epsilon * max_rows_per_user
    with spend_release(budget_key, user_epsilon, 0.0, description, ledger_url=ledger_url) as spend:
        return fit(spend)
