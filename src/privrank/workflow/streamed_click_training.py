"""Train a click model on a large ad log streamed part by part (``privrank ads train --stream``).

:func:`train_click_model_streamed`:

1. plans the stream in one pass (:func:`~privrank.data.ad_log_stream.plan_ad_log_stream`): the
   window of the first ``max_rows`` impressions, each user's first ``max_rows_per_user`` rows,
   the last ``validation_rows`` of the window as the (time-later) validation part, the labels
   and the feature vocabulary of the training part;
2. trains either
   - ``fm`` (or another neural ranker): mini-batch epochs that read the training part one
     Parquet part at a time (:class:`~privrank.data.ad_log_stream.ChunkedFeatureTable`), with
     the validation log loss and AUC after every epoch, early stopping and calibration on the
     validation part; saved as a ranker directory (servable by the ads route), or
   - ``lightgbm``: LightGBM's binned dataset built from the parts through ``lightgbm.Sequence``
     (:meth:`~privrank.ranking.gbdt_click.GBDTClickModel.fit_chunks`); the validation AUC and
     log loss are reported; saved as a LightGBM click-model directory;
3. records rows, seconds, rows per second and the process's peak resident memory.

The training rows are never all in memory: peak memory is one part's columns and codes plus two
bytes a row of the window (see :mod:`privrank.data.ad_log_stream`). Not private: the labels are
the true clicks and nothing is spent (label-DP fits are ``privrank ads train`` without
``--stream``).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privrank.data.ad_log_stream import AdLogStream, plan_ad_log_stream
from privrank.data.synthetic_ads import FEATURE_COLUMNS
from privrank.errors import ConfigError
from privrank.metrics.ctr import auc, log_loss
from privrank.models import FitOptions, FitProgress
from privrank.ranking.ctr import CTR_RANKERS, create_ranker
from privrank.ranking.gbdt_click import GBDTClickConfig, GBDTClickModel

__all__ = ["StreamedFit", "peak_rss_mib", "train_click_model_streamed"]

#: The LightGBM model's categorical columns (all but hour and slot position, as in
#: :data:`privrank.workflow.label_dp_training.CATEGORICAL_COLUMNS`).
_GBDT_CATEGORICAL = tuple(c for c in FEATURE_COLUMNS if c not in ("hour", "position"))


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (``ru_maxrss``, Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class StreamedFit:
    """What a streamed fit did.

    Attributes:
        model: ``lightgbm`` or the ranker's name.
        train_rows: Training rows (after the per-user bound).
        validation_rows: Validation rows.
        dropped: Window rows left out by the per-user bound.
        plan_seconds: The planning pass.
        fit_seconds: The fit (all epochs or boosting rounds).
        rows_per_second: Training rows × epochs (1 for LightGBM) / fit seconds.
        epochs: Epochs run (1 for LightGBM: it reads the rows once into its binned form).
        validation_auc: AUC of the saved model on the validation part.
        validation_log_loss: Log loss of the saved model (calibrated) on the validation part.
        peak_rss_mib: Peak resident memory of the process at the end.
    """

    model: str
    train_rows: int
    validation_rows: int
    dropped: int
    plan_seconds: float
    fit_seconds: float
    rows_per_second: float
    epochs: int
    validation_auc: float
    validation_log_loss: float
    peak_rss_mib: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(vars(self))


def train_click_model_streamed(
    log: str | Path,
    out: str | Path,
    *,
    model: str = "fm",
    max_rows: int | None = None,
    max_rows_per_user: int | None = None,
    validation_rows: int | None = None,
    params: Mapping[str, Any] | None = None,
    gbdt: GBDTClickConfig | None = None,
    seed: int = 0,
    threads: int = 2,
    progress: Callable[[FitProgress], None] | None = None,
    stream: AdLogStream | None = None,
) -> StreamedFit:
    """The steps of the module docstring; writes ``out`` and returns the fit's facts.

    Args:
        log: A log written by ``privrank data synth-ads``.
        out: Model directory to write (atomically).
        model: ``lightgbm`` or a neural CTR ranker (``fm``, ``deepfm``, ``dcn-v2``, ``finalmlp``,
            ``logistic``).
        max_rows: The window: the first rows of the log (``None``: all).
        max_rows_per_user: Rows kept per user (``None``: all).
        validation_rows: The window's last rows held out (``None``: 5 %, at most 200,000).
        params: The neural ranker's config fields.
        gbdt: LightGBM's config.
        seed: Seed of the shuffles, the initialisation and LightGBM.
        threads: Torch threads of the neural fit.
        progress: Called after every epoch of a neural fit.
        stream: An already planned stream of ``log`` (the planning pass is then skipped).

    Raises:
        ConfigError: An unknown model, or parameters for the wrong kind of model.
    """
    if model != "lightgbm" and model not in CTR_RANKERS:
        raise ConfigError(
            f"model {model!r}: expected lightgbm or one of {', '.join(sorted(CTR_RANKERS))}"
        )
    if model == "lightgbm" and params:
        raise ConfigError("LightGBM takes its settings from the GBDT config, not ranker params")
    if model != "lightgbm" and gbdt is not None:
        raise ConfigError(f"{model} is a neural ranker: a GBDT config does not apply")
    ranker = None if model == "lightgbm" else create_ranker(model, dict(params or {}))
    if ranker is not None and not ranker.supports_streaming:
        raise ConfigError(f"{model} cannot train on streamed rows")
    started = time.perf_counter()
    if stream is None:
        hash_buckets = ranker.config.hash_buckets if ranker is not None else 8
        min_count = ranker.config.min_count if ranker is not None else 1
        stream = plan_ad_log_stream(
            log,
            max_rows=max_rows,
            max_rows_per_user=max_rows_per_user,
            validation_rows=validation_rows,
            hash_buckets=hash_buckets,
            min_count=min_count,
        )
    plan_seconds = time.perf_counter() - started
    valid_labels = stream.validation["label"].astype(np.float64)
    fit_started = time.perf_counter()
    history: list[dict[str, float]] = []
    if ranker is None:
        config = gbdt or GBDTClickConfig(seed=seed)
        booster = GBDTClickModel(FEATURE_COLUMNS, _GBDT_CATEGORICAL, config)
        booster.fit_chunks(stream.chunks)
        fit_seconds = time.perf_counter() - fit_started
        p = booster.predict_ctr(stream.validation)
        epochs = 1
    else:
        ranker.fit(
            stream.train_table(),
            stream.validation_table(),
            FitOptions(seed=seed, threads=threads, progress=progress),
        )
        fit_seconds = time.perf_counter() - fit_started
        p = ranker.predict_proba(stream.validation_table())
        history = list(ranker.history_)
        epochs = len(history)
    result = StreamedFit(
        model=model,
        train_rows=stream.train_rows,
        validation_rows=int(valid_labels.size),
        dropped=stream.dropped,
        plan_seconds=plan_seconds,
        fit_seconds=fit_seconds,
        rows_per_second=stream.train_rows * max(epochs, 1) / max(fit_seconds, 1e-9),
        epochs=epochs,
        validation_auc=auc(valid_labels, p),
        validation_log_loss=log_loss(valid_labels, p),
        peak_rss_mib=peak_rss_mib(),
        history=history,
    )
    training = {
        "streamed": True,
        "log": str(log),
        "window_rows": stream.window_rows,
        "max_rows_per_user": max_rows_per_user,
        **result.to_dict(),
    }
    if ranker is None:
        booster.save(out, {"label_dp": None, "training": training, "spend": None})
    else:
        ranker.save(out)
    return result
