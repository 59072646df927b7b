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
bytes a row of the window (see :mod:`privrank.data.ad_log_stream`).

**Label DP** (``epsilon`` finite; LightGBM only). Every kept training row's click is randomised
once by binary randomised response at ε (:class:`~privrank.privacy.label_dp.RRWithPriorMechanism`
with a uniform prior: keep probability :math:`q = e^\varepsilon/(e^\varepsilon+1)`), part by
part, before LightGBM reads the labels; the model is fitted on the noisy labels and its outputs
are calibrated by inverting the response (``label_keep = q``). Unit of privacy: one example's
label (features and participation are not protected), δ = 0; with at most ``max_rows_per_user``
rows a user (required) all of a user's labels are protected at :math:`C\varepsilon`, which is
reserved in the ledger before the noise is drawn and committed after the model is saved (the
same guarantee as ``privrank ads train`` without ``--stream``, one stage). The validation part
(the window's last rows, not trained on) is scored with its **true** labels for the printed AUC
and log loss: those rows and that figure are not covered, they are for the operator. A neural
ranker is refused under label DP: it early-stops and calibrates on validation labels, which
would then have to be randomised too (not built).
"""

from __future__ import annotations

import dataclasses
import math
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
from privrank.privacy.label_dp import LabelBatch, LabelDPGuarantee, RRWithPriorMechanism
from privrank.ranking.ctr import CTR_RANKERS, create_ranker
from privrank.ranking.gbdt_click import GBDTClickConfig, GBDTClickModel
from privrank.workflow.spend import Spend, spend_release

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
        label_dp: The label-DP guarantee (``None``: trained on the true labels).
        label_agreement: Share of noisy training labels equal to the true ones.
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
    label_dp: LabelDPGuarantee | None = None
    label_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out = dict(vars(self))
        out["label_dp"] = None if self.label_dp is None else self.label_dp.to_dict()
        return out


def _randomise_chunks(
    stream: AdLogStream, mechanism: RRWithPriorMechanism, rng: np.random.Generator
) -> tuple[AdLogStream, float]:
    """The stream with every training part's labels replaced by one binary randomised response
    each (uniform prior), and the share of responses equal to the true label."""
    chunks, same, total = [], 0, 0
    for chunk in stream.chunks:
        truth = chunk.labels.astype(np.int64)
        noisy = mechanism.add_noise(LabelBatch(truth, np.full((truth.size, 2), 0.5)), rng).labels
        same += int((noisy == truth).sum())
        total += truth.size
        chunks.append(dataclasses.replace(chunk, labels=noisy.astype(chunk.labels.dtype)))
    return dataclasses.replace(stream, chunks=tuple(chunks)), same / max(total, 1)


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
    epsilon: float = math.inf,
    budget_key: str | None = None,
    ledger_url: str | None = None,
    noise_rng: np.random.Generator | None = None,
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
        epsilon: ε per example's label (``inf``: the true labels, nothing spent).
        budget_key: Ledger key charged ``max_rows_per_user · ε`` (required when ε is finite).
        ledger_url: The ledger (default ``PRIVRANK_LEDGER_URL``).
        noise_rng: Generator of the label noise only (default: fresh OS entropy).

    Raises:
        ConfigError: An unknown model, parameters for the wrong kind of model, or a label-DP
            fit of a neural ranker, without a per-user cap or without a budget key.
        PrivacyBudgetExceeded: Before any label is randomised, when the budget does not cover
            ``max_rows_per_user · ε``.
    """
    if model != "lightgbm" and model not in CTR_RANKERS:
        raise ConfigError(
            f"model {model!r}: expected lightgbm or one of {', '.join(sorted(CTR_RANKERS))}"
        )
    if model == "lightgbm" and params:
        raise ConfigError("LightGBM takes its settings from the GBDT config, not ranker params")
    if model != "lightgbm" and gbdt is not None:
        raise ConfigError(f"{model} is a neural ranker: a GBDT config does not apply")
    private = not math.isinf(epsilon)
    if private:
        if model != "lightgbm":
            raise ConfigError(
                f"label DP on streamed rows trains lightgbm only; {model} early-stops and "
                "calibrates on validation labels, which label DP would have to randomise too"
            )
        if max_rows_per_user is None:
            raise ConfigError("a label-DP fit needs max_rows_per_user (the ledger is charged C·ε)")
        if not budget_key:
            raise ConfigError("a label-DP fit spends from the ledger: pass a budget key")
        mechanism = RRWithPriorMechanism(epsilon, n_classes=2)
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
    if ranker is None and private:
        assert budget_key is not None and max_rows_per_user is not None
        description = (
            f"streamed label-DP click model (RR, ε={epsilon:g} per label, ≤{max_rows_per_user} "
            f"rows a user) on {Path(log).name}"
        )
        with spend_release(
            budget_key, epsilon * max_rows_per_user, 0.0, description, ledger_url=ledger_url
        ) as spend:
            rng = noise_rng if noise_rng is not None else np.random.default_rng()
            noisy_stream, agreement = _randomise_chunks(stream, mechanism, rng)
            guarantee = mechanism.guarantee(stages=1, max_rows_per_user=max_rows_per_user)
            booster = GBDTClickModel(
                FEATURE_COLUMNS, _GBDT_CATEGORICAL, gbdt or GBDTClickConfig(seed=seed)
            )
            booster.fit_chunks(
                noisy_stream.chunks, label_keep=mechanism.calibrate(epsilon, 0, "pld")
            )
            fit_seconds = time.perf_counter() - fit_started
            p = booster.predict_ctr(stream.validation)
            result = _result(model, stream, valid_labels, p, plan_seconds, fit_seconds, 1, [])
            result.label_dp, result.label_agreement = guarantee, agreement
            _save_booster(booster, out, log, stream, max_rows_per_user, result, spend)
        return result
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
    result = _result(model, stream, valid_labels, p, plan_seconds, fit_seconds, epochs, history)
    if ranker is None:
        _save_booster(booster, out, log, stream, max_rows_per_user, result, None)
    else:
        ranker.save(out)
    return result


def _result(
    model: str,
    stream: AdLogStream,
    valid_labels: np.ndarray,
    p: np.ndarray,
    plan_seconds: float,
    fit_seconds: float,
    epochs: int,
    history: list[dict[str, float]],
) -> StreamedFit:
    return StreamedFit(
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


def _save_booster(
    booster: GBDTClickModel,
    out: str | Path,
    log: str | Path,
    stream: AdLogStream,
    max_rows_per_user: int | None,
    result: StreamedFit,
    spend: Spend | None,
) -> None:
    training = {
        "streamed": True,
        "log": str(log),
        "window_rows": stream.window_rows,
        "max_rows_per_user": max_rows_per_user,
        **result.to_dict(),
    }
    label_dp = training.pop("label_dp")
    booster.save(
        out,
        {
            "label_dp": label_dp,
            "training": training,
            "spend": None if spend is None else spend.to_dict(),
        },
    )
