r"""Uncertainty of metric means over users, and paired comparisons of two models.

**Bootstrap CI** (percentile method): draw :math:`B` resamples of the :math:`n` users with
replacement (``numpy.random.default_rng(seed)``), take the mean of each, and report the
:math:`\alpha/2` and :math:`1 - \alpha/2` quantiles of those :math:`B` means (numpy's linear
interpolation), :math:`\alpha = 1 - \text{confidence}`. Several metrics of one result share the
same resamples (:func:`bootstrap_cis`), so their intervals are jointly consistent. NaN values
(e.g. novelty of a user with an empty list) are skipped, as in the means.

**Paired comparison** of models A and B on the same users, with differences
:math:`d_u = a_u - b_u` (pairs with a NaN dropped):

* paired t-test: :math:`t = \bar d / (s_d / \sqrt{n})`, :math:`s_d` the sample standard
  deviation (ddof 1), two-sided, ``scipy.stats.ttest_rel``; with its t-interval of
  :math:`\bar d`;
* Wilcoxon signed-rank test, two-sided, zero differences dropped (``zero_method="wilcox"``),
  ``scipy.stats.wilcoxon``; when every difference is zero the statistic is 0 and p = 1;
* effect size: Cohen's :math:`d_z = \bar d / s_d` (0 when every difference is zero, infinite
  when they are all equal and non-zero);
* a bootstrap percentile CI of :math:`\bar d` (same resampling as above).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from privrank.errors import ConfigError

__all__ = [
    "ConfidenceInterval",
    "PairedComparison",
    "bootstrap_ci",
    "bootstrap_cis",
    "compare_results",
    "paired_comparison",
    "resample_counts",
]

_RESAMPLE_ENTRIES = 1 << 22  # resampled values held at once (bounds memory, ~32 MB)


@dataclass(frozen=True)
class ConfidenceInterval:
    """A mean with its confidence interval.

    Attributes:
        estimate: The mean over users.
        low: Lower bound.
        high: Upper bound.
        confidence: Nominal coverage, e.g. ``0.95``.
        n: Users (non-NaN values) the mean is over.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        method: ``"percentile bootstrap"``.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    n_resamples: int
    seed: int
    method: str = "percentile bootstrap"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Model A vs model B on the same users (see the module docstring for the formulas).

    Attributes:
        n: Users compared.
        mean_a: Mean of A.
        mean_b: Mean of B.
        mean_difference: Mean of ``a - b``.
        difference_ci: Bootstrap percentile CI of the mean difference.
        t_interval: ``(low, high)`` t-interval of the mean difference.
        t_statistic: Paired t statistic.
        t_pvalue: Two-sided p-value of the paired t-test.
        wilcoxon_statistic: Wilcoxon signed-rank statistic (scipy's: the smaller rank sum).
        wilcoxon_pvalue: Two-sided p-value of the Wilcoxon test.
        cohens_d: Cohen's d_z for paired samples.
    """

    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    difference_ci: ConfidenceInterval
    t_interval: tuple[float, float]
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    cohens_d: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = asdict(self)
        out["t_interval"] = list(self.t_interval)
        return out


def _check(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")


def _resample_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """``[metrics, n_resamples]`` means of ``values [metrics, n]`` over user resamples.

    Each resample is ``n`` user indices drawn uniformly with replacement; its mean is computed
    from the per-user draw counts (``counts @ values / counts @ finite``), so that every metric
    shares the resample and NaN entries drop out of both sums.
    """
    n_metrics, n = values.shape
    rng = np.random.default_rng(seed)
    finite = ~np.isnan(values)
    filled = np.where(finite, values, 0.0)
    finite = finite.astype(np.float64)
    chunk = max(1, _RESAMPLE_ENTRIES // n)
    means = np.empty((n_metrics, n_resamples))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        picks = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)
        counts = counts.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, start : start + size] = (filled @ counts.T) / (finite @ counts.T)
    return means


def resample_counts(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's user resamples as draw counts: ``[size, n]`` float64 blocks, in order.

    The same draws as :func:`bootstrap_cis` with the same ``seed`` (``n`` indices uniform with
    replacement per resample), for statistics that are not means (AUC, calibration error): a
    statistic evaluated with these counts as row weights is its value on the resample.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _RESAMPLE_ENTRIES // max(n, 1))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        picks = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)
        yield counts.astype(np.float64)


def bootstrap_cis(
    per_user: Mapping[str, np.ndarray],
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, ConfidenceInterval]:
    """Percentile bootstrap CIs of several per-user metrics, from shared user resamples.

    Args:
        per_user: Metric name → values over the same users (equal lengths).
        confidence: Nominal coverage.
        n_resamples: Bootstrap resamples :math:`B`.
        seed: Seed of the resampling.

    Returns:
        Metric name → interval.
    """
    _check(confidence, n_resamples)
    names = list(per_user)
    if not names:
        return {}
    values = np.vstack([np.asarray(per_user[name], dtype=np.float64) for name in names])
    alpha = 1.0 - confidence
    out = {}
    n = values.shape[1]
    if n == 0:
        nan = float("nan")
        return {
            name: ConfidenceInterval(nan, nan, nan, confidence, 0, n_resamples, seed)
            for name in names
        }
    means = _resample_means(values, n_resamples, seed)
    for row, name in enumerate(names):
        finite = values[row][~np.isnan(values[row])]
        if len(finite) == 0:
            low = high = estimate = float("nan")
        else:
            estimate = float(finite.mean())
            low, high = np.nanquantile(means[row], [alpha / 2, 1 - alpha / 2])
        out[name] = ConfidenceInterval(
            estimate, float(low), float(high), confidence, len(finite), n_resamples, seed
        )
    return out


def bootstrap_ci(
    values: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> ConfidenceInterval:
    """Percentile bootstrap CI of the mean of one per-user metric."""
    return bootstrap_cis(
        {"value": values}, confidence=confidence, n_resamples=n_resamples, seed=seed
    )["value"]


def paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two models' per-user values on the same users (``a[u]`` and ``b[u]``).

    Raises:
        ConfigError: ``a`` and ``b`` differ in length, or fewer than 2 complete pairs remain.
    """
    _check(confidence, n_resamples)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"paired values must be 1-D of equal length, got {a.shape}, {b.shape}")
    complete = ~(np.isnan(a) | np.isnan(b))
    a, b = a[complete], b[complete]
    if len(a) < 2:
        raise ConfigError(f"a paired comparison needs at least 2 users, got {len(a)}")
    diff = a - b
    mean_diff = float(diff.mean())
    sd = float(diff.std(ddof=1))
    if sd > 0:
        t_result = scipy_stats.ttest_rel(a, b)
        interval = t_result.confidence_interval(confidence)
        t_stat, t_p = float(t_result.statistic), float(t_result.pvalue)
        t_interval = (float(interval.low), float(interval.high))
        cohens_d = mean_diff / sd
    else:  # every difference equal: the t statistic is 0/0 or c/0
        t_stat = 0.0 if mean_diff == 0 else float(np.copysign(np.inf, mean_diff))
        t_p = 1.0 if mean_diff == 0 else 0.0
        t_interval = (mean_diff, mean_diff)
        cohens_d = 0.0 if mean_diff == 0 else float(np.copysign(np.inf, mean_diff))
    if np.any(diff != 0):
        w_result = scipy_stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
        w_stat, w_p = float(w_result.statistic), float(w_result.pvalue)
    else:
        w_stat, w_p = 0.0, 1.0
    return PairedComparison(
        n=len(a),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_difference=mean_diff,
        difference_ci=bootstrap_ci(diff, confidence=confidence, n_resamples=n_resamples, seed=seed),
        t_interval=t_interval,
        t_statistic=t_stat,
        t_pvalue=t_p,
        wilcoxon_statistic=w_stat,
        wilcoxon_pvalue=w_p,
        cohens_d=cohens_d,
    )


def compare_results(result_a: Any, result_b: Any, metric: str, **options: Any) -> PairedComparison:
    """:func:`paired_comparison` of one metric of two :class:`EvaluationResult` objects.

    Raises:
        ConfigError: The results were not computed on the same users, or lack ``metric``.
    """
    if not np.array_equal(result_a.users, result_b.users):
        raise ConfigError(
            "paired comparison needs results on the same users "
            f"({len(result_a.users)} vs {len(result_b.users)} users, or different codes)"
        )
    for result in (result_a, result_b):
        if metric not in result.per_user:
            raise ConfigError(
                f"metric {metric!r} not in the result; available: {sorted(result.per_user)}"
            )
    return paired_comparison(result_a.per_user[metric], result_b.per_user[metric], **options)
