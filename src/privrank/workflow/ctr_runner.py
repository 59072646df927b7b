"""The evaluation runner's CTR protocol kind: rankers fitted, calibrated and scored on test rows.

:func:`privrank.workflow.runner.run` hands every CTR protocol
(:mod:`privrank.workflow.ctr_protocols`) here. For each model of the run (a CTR ranker's
registry name, :data:`privrank.ranking.ctr.CTR_RANKERS`), on the protocol's parts:

1. the ranker is fitted on ``train`` with the run's seed and threads, early-stopping on the
   validation log loss, and calibrated on the validation predictions
   (:class:`~privrank.ranking.ctr.CTRRanker`);
2. it predicts the test rows; AUC, log loss, normalised entropy (background: the training CTR)
   and ECE get percentile-bootstrap CIs over test rows (:func:`privrank.metrics.ctr.ctr_metrics`,
   the run's ``n_resamples``, ``confidence`` and ``bootstrap_seed``), for the calibrated
   probabilities (``metrics``) and the model's own (``uncalibrated``);
3. every model is compared with the baseline on the same test rows
   (:func:`privrank.metrics.ctr.compare_ctr`): AUC by paired bootstrap, per-row log loss by
   paired t-test and Wilcoxon.

Files per model, beside the recommender results: ``OUT/<protocol>/<model>.json`` (the record of
:func:`ctr_record`: ``metrics.auc.estimate``, ``metrics.log_loss``, ``metrics.ece``,
``metrics.normalized_entropy`` with their CIs, the comparisons, the reliability points, the
training history) and ``OUT/<protocol>/<model>.predictions.parquet`` (test row, label,
calibrated and raw probability), both written atomically.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from privrank.atomic import atomic_file
from privrank.errors import ConfigError
from privrank.metrics.ctr import compare_ctr, ctr_metrics, reliability
from privrank.metrics.stats import ConfidenceInterval
from privrank.models import FitOptions
from privrank.ranking.ctr import CTRRanker, create_ranker, is_ranker
from privrank.workflow.ctr_protocols import PreparedCTR
from privrank.workflow.records import library_versions, safe_name, write_json
from privrank.workflow.run_config import ModelSpec, RunConfig

__all__ = ["CTRRun", "compare_ctr_runs", "ctr_record", "fit_and_evaluate_ctr", "write_ctr_files"]

RESULT_FORMAT = "privrank.result"
RESULT_VERSION = 1


@dataclass
class CTRRun:
    """One CTR ranker fitted and scored on one CTR protocol.

    Attributes:
        prepared: The protocol's parts.
        spec: The model's spec.
        ranker: The fitted ranker.
        labels: Test labels.
        probabilities: Calibrated test probabilities.
        raw: Uncalibrated test probabilities.
        metrics: Metric → CI of the calibrated probabilities.
        uncalibrated: Metric → CI of the raw probabilities.
        fit_seconds: Wall time of the fit (calibration included).
        predict_seconds: Wall time of predicting the test rows.
        comparisons: Metric → comparison with the baseline (empty for the baseline).
        baseline: The baseline's label.
    """

    prepared: PreparedCTR
    spec: ModelSpec
    ranker: CTRRanker
    labels: np.ndarray
    probabilities: np.ndarray
    raw: np.ndarray
    metrics: dict[str, ConfidenceInterval]
    uncalibrated: dict[str, ConfidenceInterval]
    fit_seconds: float
    predict_seconds: float
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = None


def fit_and_evaluate_ctr(
    prepared: PreparedCTR,
    spec: ModelSpec,
    config: RunConfig,
    *,
    fit_progress: Callable[[Any], None] | None = None,
    status: Callable[[str, str], None] | None = None,
) -> CTRRun:
    """Fit one CTR ranker on a prepared CTR protocol and score it (see the module docstring).

    Raises:
        ConfigError: ``spec`` names a recommender, not a CTR ranker, or asks for privacy.
    """
    if not is_ranker(spec.name):
        raise ConfigError(
            f"{spec.display}: {spec.name!r} is not a CTR ranker, and {prepared.spec.name!r} is a "
            "CTR protocol; use logistic, fm, deepfm, dcn-v2, finalmlp, lightgbm, "
            "deepctr-deepfm or deepctr-dcn"
        )
    if spec.privacy is not None:
        raise ConfigError(f"{spec.display}: CTR rankers cannot train with differential privacy yet")
    ranker = create_ranker(spec.name, spec.params)
    if status is not None:
        status(spec.display, f"fitting on {len(prepared.train):,} rows")
    options = FitOptions(seed=config.seed, threads=config.threads, progress=fit_progress)
    started = time.perf_counter()
    ranker.fit(prepared.train, prepared.validation, options)
    fit_seconds = time.perf_counter() - started
    if status is not None:
        status(spec.display, f"fitted in {fit_seconds:.1f} s; scoring {len(prepared.test):,} rows")
    started = time.perf_counter()
    test = ranker.encode(prepared.test)
    raw = ranker.predict_raw(test)
    assert ranker.calibrator_ is not None
    calibrated = ranker.calibrator_.apply(raw)
    predict_seconds = time.perf_counter() - started
    labels = test.labels.astype(np.float64)
    background = float(prepared.train.labels.mean())
    options_ci: dict[str, Any] = {
        "confidence": config.confidence,
        "n_resamples": config.n_resamples,
        "seed": config.bootstrap_seed,
        "n_bins": prepared.spec.ece_bins,
        "background": background,
    }
    return CTRRun(
        prepared=prepared,
        spec=spec,
        ranker=ranker,
        labels=labels,
        probabilities=calibrated,
        raw=raw,
        metrics=ctr_metrics(labels, calibrated, **options_ci),
        uncalibrated=ctr_metrics(labels, raw, **options_ci),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
    )


def compare_ctr_runs(runs: list[CTRRun], baseline: str, config: RunConfig) -> None:
    """Fill every run's ``comparisons`` with the paired comparison against the baseline."""
    base = next((r for r in runs if r.spec.display == baseline), None)
    if base is None:
        raise ConfigError(f"baseline {baseline!r} is not among the runs")
    for run_ in runs:
        run_.baseline = baseline
        if run_ is base:
            continue
        comparison = compare_ctr(
            run_.labels,
            run_.probabilities,
            base.probabilities,
            confidence=config.confidence,
            n_resamples=config.n_resamples,
            seed=config.bootstrap_seed,
        )
        auc = comparison.auc
        run_.comparisons = {
            "auc": {
                "test": "paired bootstrap over test rows",
                "mean_a": auc.auc_a,
                "mean_b": auc.auc_b,
                "mean_difference": auc.difference,
                "difference_ci": auc.difference_ci.to_dict(),
                "pvalue": auc.pvalue,
            },
            "log_loss": {
                "test": "paired t-test and Wilcoxon over per-row log loss",
                **comparison.log_loss.to_dict(),
            },
        }


def ctr_record(run_: CTRRun, config: RunConfig) -> dict[str, Any]:
    """The JSON result of one CTR run (see the module docstring)."""
    ranker = run_.ranker
    bins = run_.prepared.spec.ece_bins
    return {
        "format": RESULT_FORMAT,
        "version": RESULT_VERSION,
        "kind": "ctr",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **run_.prepared.describe(),
        "model": {
            "name": run_.spec.name,
            "label": run_.spec.display,
            "config": ranker.config.model_dump(mode="json"),
            "fit_seed": config.seed,
            "threads": config.threads,
        },
        "headline": list(run_.prepared.spec.headline),
        "evaluation": {
            "counts": {"rows": len(run_.labels), "clicks": int(run_.labels.sum())},
            "ece_bins": bins,
            "normalized_entropy_background": float(run_.prepared.train.labels.mean()),
        },
        "metrics": {name: ci.to_dict() for name, ci in run_.metrics.items()},
        "uncalibrated": {name: ci.to_dict() for name, ci in run_.uncalibrated.items()},
        "calibration": None if ranker.calibrator_ is None else {
            "kind": ranker.calibrator_.kind, "fitted_on": "validation"},
        "reliability": {
            "calibrated": reliability(run_.labels, run_.probabilities, bins).to_dict(),
            "uncalibrated": reliability(run_.labels, run_.raw, bins).to_dict(),
        },
        "history": ranker.history_,
        "timing": {"fit_s": run_.fit_seconds, "evaluate_s": run_.predict_seconds},
        "baseline": run_.baseline,
        "comparisons": run_.comparisons,
        "predictions_file": f"{safe_name(run_.spec.display)}.predictions.parquet",
        "bootstrap": {
            "confidence": config.confidence,
            "n_resamples": config.n_resamples,
            "seed": config.bootstrap_seed,
            "unit": "test row",
        },
        "versions": library_versions(),
        "environment": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }  # fmt: skip


def write_ctr_files(run_: CTRRun, record: dict[str, Any], out: Path) -> Path:
    """Write a run's JSON record and predictions Parquet under ``out/<protocol>/``."""
    folder = out / safe_name(run_.prepared.spec.name)
    stem = safe_name(run_.spec.display)
    table = pa.table(
        {
            "row": pa.array(np.arange(len(run_.labels), dtype=np.int64)),
            "label": pa.array(run_.labels.astype(np.int8)),
            "probability": pa.array(run_.probabilities),
            "raw_probability": pa.array(run_.raw),
        }
    )
    with atomic_file(folder / f"{stem}.predictions.parquet", mode="wb") as handle:
        pq.write_table(table, handle)
    path = folder / f"{stem}.json"
    write_json(path, record)
    return path
