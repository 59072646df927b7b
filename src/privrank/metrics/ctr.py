r"""Click-through-rate metrics: AUC, log loss, normalised entropy, calibration, with CIs.

For labels :math:`y_i \in \{0, 1\}`, predicted probabilities :math:`p_i` and row weights
:math:`w_i` (1 by default; bootstrap draw counts in a resample):

- **AUC** (ROC area, the Mann-Whitney statistic): the probability that a random positive is
  scored above a random negative, ties counting one half,
  :math:`\frac{1}{W_+ W_-} \sum_{i: y_i = 1} \sum_{j: y_j = 0} w_i w_j
  ([p_i > p_j] + \tfrac12 [p_i = p_j])`.
- **Log loss**: :math:`-\frac{1}{W} \sum_i w_i (y_i \log p_i + (1 - y_i) \log (1 - p_i))`,
  with :math:`p` clipped to :math:`[10^{-15}, 1 - 10^{-15}]`.
- **Normalised entropy** (He et al., ADKDD 2014): log loss divided by the entropy of the
  background CTR :math:`\bar p`, :math:`-(\bar p \log \bar p + (1 - \bar p) \log (1 - \bar p))`;
  below 1 means better than always predicting :math:`\bar p`. :math:`\bar p` is the evaluated
  rows' click rate unless given (e.g. the training CTR).
- **ECE** (expected calibration error): rows binned by :math:`p` into ``n_bins`` equal-width bins
  on :math:`[0, 1]`; :math:`\sum_b \frac{W_b}{W} |\bar y_b - \bar p_b|`. The reliability diagram
  plots :math:`\bar p_b` against :math:`\bar y_b` (:func:`reliability`).

**Uncertainty.** :func:`ctr_metrics` gives a percentile-bootstrap CI of every metric over
resamples of the rows (:func:`privrank.metrics.stats.resample_counts`: the same draws as
:func:`~privrank.metrics.stats.bootstrap_cis`, so several models evaluated on the same rows with
the same seed share their resamples). :func:`compare_ctr` compares two models on the same rows:
the per-row log losses through :func:`~privrank.metrics.stats.paired_comparison` (paired t-test,
Wilcoxon, Cohen's d, bootstrap CI), and the AUC difference by a paired bootstrap (CI, and the
two-sided p-value :math:`2 \min(P^*(\Delta \le 0), P^*(\Delta \ge 0))`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from privrank.errors import ConfigError
from privrank.metrics.stats import (
    ConfidenceInterval,
    PairedComparison,
    paired_comparison,
    resample_counts,
)

__all__ = [
    "CTR_METRICS",
    "AUCComparison",
    "CTRComparison",
    "Reliability",
    "auc",
    "compare_ctr",
    "ctr_metrics",
    "expected_calibration_error",
    "log_loss",
    "normalized_entropy",
    "reliability",
    "row_log_loss",
]

#: The metrics :func:`ctr_metrics` reports.
CTR_METRICS = ("auc", "log_loss", "normalized_entropy", "ece")
_EPS = 1e-15


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ConfigError(f"labels and probabilities differ in length: {len(y)} vs {len(p)}")
    if len(y) and not np.all((y == 0) | (y == 1)):
        raise ConfigError("labels must be 0 or 1")
    if len(p) and not (np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1):
        raise ConfigError("probabilities must be finite and in [0, 1]")
    return y, p


def _weights(n: int, weights: np.ndarray | None) -> np.ndarray:
    return np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)


class _AUC:
    """AUC of fixed (y, p) under many weightings: the ties are grouped once."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        _, self.group = np.unique(p, return_inverse=True)
        self.n_groups = int(self.group.max()) + 1 if len(p) else 0
        self.y = y

    def __call__(self, w: np.ndarray) -> float:
        pos = np.bincount(self.group, weights=w * self.y, minlength=self.n_groups)
        neg = np.bincount(self.group, weights=w * (1 - self.y), minlength=self.n_groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC (NaN when only one class is present)."""
    y, p = _check(y, p)
    return _AUC(y, p)(_weights(len(y), weights))


def row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``[n]`` per-row log loss (natural log, ``p`` clipped to ``[1e-15, 1 - 1e-15]``)."""
    y, p = _check(y, p)
    p = np.clip(p, _EPS, 1 - _EPS)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def log_loss(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean (weighted) log loss."""
    losses = row_log_loss(y, p)
    w = _weights(len(losses), weights)
    return float((w * losses).sum() / w.sum())


def _entropy(rate: float) -> float:
    rate = min(max(rate, _EPS), 1 - _EPS)
    return float(-(rate * np.log(rate) + (1 - rate) * np.log1p(-rate)))


def normalized_entropy(
    y: np.ndarray,
    p: np.ndarray,
    weights: np.ndarray | None = None,
    background: float | None = None,
) -> float:
    """Log loss over the entropy of the background CTR (the rows' own, unless given)."""
    y, p = _check(y, p)
    w = _weights(len(y), weights)
    rate = float((w * y).sum() / w.sum()) if background is None else background
    return log_loss(y, p, w) / _entropy(rate)


def _bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None, n_bins: int = 15
) -> float:
    """ECE over ``n_bins`` equal-width probability bins."""
    y, p = _check(y, p)
    w = _weights(len(y), weights)
    bins = _bins(p, n_bins)
    gap = np.bincount(bins, weights=w * (y - p), minlength=n_bins)
    return float(np.abs(gap).sum() / w.sum())


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's points: per bin, the mean prediction, the click rate, the rows.

    Attributes:
        edges: ``[n_bins + 1]`` bin edges on ``[0, 1]``.
        mean_predicted: ``[n_bins]`` mean probability in each bin (NaN for an empty bin).
        observed_rate: ``[n_bins]`` click rate in each bin (NaN for an empty bin).
        counts: ``[n_bins]`` rows in each bin.
    """

    edges: np.ndarray
    mean_predicted: np.ndarray
    observed_rate: np.ndarray
    counts: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON form (lists; NaN as ``None``)."""

        def plain(a: np.ndarray) -> list[Any]:
            return [None if np.isnan(x) else float(x) for x in a.astype(np.float64)]

        return {
            "edges": plain(self.edges),
            "mean_predicted": plain(self.mean_predicted),
            "observed_rate": plain(self.observed_rate),
            "counts": [int(c) for c in self.counts],
        }


def reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> Reliability:
    """The points of a reliability diagram (same bins as :func:`expected_calibration_error`)."""
    y, p = _check(y, p)
    bins = _bins(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, weights=p, minlength=n_bins) / counts
        rate = np.bincount(bins, weights=y, minlength=n_bins) / counts
    return Reliability(np.linspace(0, 1, n_bins + 1), mean_p, rate, counts)


def _statistics(
    y: np.ndarray, p: np.ndarray, n_bins: int, background: float | None
) -> dict[str, Callable[[np.ndarray], float]]:
    area = _AUC(y, p)
    losses = row_log_loss(y, p)
    bins = _bins(p, n_bins)

    def loss(w: np.ndarray) -> float:
        return float((w * losses).sum() / w.sum())

    def entropy(w: np.ndarray) -> float:
        rate = float((w * y).sum() / w.sum()) if background is None else background
        return loss(w) / _entropy(rate)

    def ece(w: np.ndarray) -> float:
        gap = np.bincount(bins, weights=w * (y - p), minlength=n_bins)
        return float(np.abs(gap).sum() / w.sum())

    return {"auc": area, "log_loss": loss, "normalized_entropy": entropy, "ece": ece}


def ctr_metrics(
    y: np.ndarray,
    p: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
    background: float | None = None,
) -> dict[str, ConfidenceInterval]:
    """AUC, log loss, normalised entropy and ECE with percentile-bootstrap CIs over rows.

    Args:
        y: Labels (0/1).
        p: Predicted click probabilities.
        confidence: Nominal coverage of the intervals.
        n_resamples: Bootstrap resamples of the rows.
        seed: Seed of the resampling (shared with other models on the same rows).
        n_bins: ECE bins.
        background: Background CTR of the normalised entropy (default: the rows' own).

    Returns:
        Metric name (:data:`CTR_METRICS`) → estimate with its interval.
    """
    if not 0 < confidence < 1 or n_resamples < 1:
        raise ConfigError(f"need 0 < confidence < 1 and n_resamples >= 1, got {confidence}, "
                          f"{n_resamples}")  # fmt: skip
    y, p = _check(y, p)
    n = len(y)
    stats = _statistics(y, p, n_bins, background)
    estimates = {name: fn(np.ones(n)) for name, fn in stats.items()}
    draws: dict[str, list[float]] = {name: [] for name in stats}
    for block in resample_counts(n, n_resamples, seed):
        for w in block:
            for name, fn in stats.items():
                draws[name].append(fn(w))
    alpha = 1 - confidence
    out = {}
    for name, values in draws.items():
        low, high = np.nanquantile(np.asarray(values), [alpha / 2, 1 - alpha / 2])
        out[name] = ConfidenceInterval(
            estimates[name], float(low), float(high), confidence, n, n_resamples, seed
        )
    return out


@dataclass(frozen=True)
class AUCComparison:
    """Paired bootstrap of an AUC difference (A − B) on the same rows.

    Attributes:
        auc_a: AUC of A.
        auc_b: AUC of B.
        difference: ``auc_a - auc_b``.
        difference_ci: Percentile-bootstrap CI of the difference (shared row resamples).
        pvalue: Two-sided bootstrap p-value of "no difference".
    """

    auc_a: float
    auc_b: float
    difference: float
    difference_ci: ConfidenceInterval
    pvalue: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class CTRComparison:
    """Model A vs model B on the same rows: AUC (paired bootstrap) and per-row log loss."""

    auc: AUCComparison
    log_loss: PairedComparison

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"auc": ..., "log_loss": ...}``."""
        return {"auc": self.auc.to_dict(), "log_loss": self.log_loss.to_dict()}


def compare_ctr(
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> CTRComparison:
    """Compare two models' probabilities on the same rows (see the module docstring)."""
    y, p_a = _check(y, p_a)
    _, p_b = _check(y, p_b)
    n = len(y)
    area_a, area_b = _AUC(y, p_a), _AUC(y, p_b)
    ones = np.ones(n)
    diffs = np.asarray(
        [area_a(w) - area_b(w) for block in resample_counts(n, n_resamples, seed) for w in block]
    )
    alpha = 1 - confidence
    low, high = np.nanquantile(diffs, [alpha / 2, 1 - alpha / 2])
    estimate = area_a(ones) - area_b(ones)
    finite = diffs[~np.isnan(diffs)]
    pvalue = min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))) if len(finite) else 1.0
    comparison = AUCComparison(
        auc_a=area_a(ones),
        auc_b=area_b(ones),
        difference=estimate,
        difference_ci=ConfidenceInterval(
            estimate, float(low), float(high), confidence, n, n_resamples, seed
        ),
        pvalue=float(pvalue),
    )
    losses = paired_comparison(
        row_log_loss(y, p_a),
        row_log_loss(y, p_b),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )
    return CTRComparison(comparison, losses)
