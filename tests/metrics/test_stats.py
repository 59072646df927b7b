"""Bootstrap CIs and paired tests against scipy and a straightforward resampling loop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from privrank.errors import ConfigError
from privrank.metrics import (
    bootstrap_ci,
    bootstrap_cis,
    compare_results,
    evaluate,
    paired_comparison,
)


def test_bootstrap_equals_a_plain_resampling_loop() -> None:
    rng = np.random.default_rng(0)
    values = rng.exponential(size=300)
    ci = bootstrap_ci(values, n_resamples=2000, seed=11)
    # Same generator, same draws (one chunk holds every resample at this size).
    picks = np.random.default_rng(11).integers(0, 300, size=(2000, 300))
    means = values[picks].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert ci.low == pytest.approx(low, rel=1e-12)
    assert ci.high == pytest.approx(high, rel=1e-12)
    assert ci.estimate == pytest.approx(values.mean())
    assert ci.low < values.mean() < ci.high
    assert (ci.n, ci.n_resamples, ci.seed, ci.confidence) == (300, 2000, 11, 0.95)


def test_bootstrap_is_seeded_and_shared_across_metrics() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(500), rng.random(500)
    first = bootstrap_cis({"a": a, "b": b}, seed=4)
    assert first == bootstrap_cis({"a": a, "b": b}, seed=4)
    alone = bootstrap_ci(a, seed=4)  # same resamples; sums may differ in the last bit
    assert (first["a"].low, first["a"].high) == pytest.approx((alone.low, alone.high), rel=1e-12)
    assert first["a"] != bootstrap_ci(a, seed=5)


def test_bootstrap_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(2)
    covered = 0
    for trial in range(200):
        sample = rng.normal(0.3, 1.0, size=150)
        ci = bootstrap_ci(sample, n_resamples=400, seed=trial)
        covered += ci.low <= 0.3 <= ci.high
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_skips_nan_and_handles_empty() -> None:
    values = np.array([1.0, np.nan, 3.0])
    ci = bootstrap_ci(values, n_resamples=200)
    assert ci.estimate == 2.0 and ci.n == 2 and 1.0 <= ci.low <= ci.high <= 3.0
    empty = bootstrap_ci(np.array([]))
    assert np.isnan(empty.estimate) and empty.n == 0
    with pytest.raises(ConfigError):
        bootstrap_ci(values, confidence=1.5)


def test_paired_tests_match_scipy() -> None:
    a = np.array([0.21, 0.35, 0.10, 0.52, 0.44, 0.30, 0.28, 0.61, 0.19, 0.40])
    b = np.array([0.18, 0.30, 0.12, 0.47, 0.41, 0.22, 0.28, 0.55, 0.20, 0.33])
    result = paired_comparison(a, b, n_resamples=500, seed=0)
    t = scipy_stats.ttest_rel(a, b)
    w = scipy_stats.wilcoxon(a, b)
    d = a - b
    assert result.t_statistic == pytest.approx(t.statistic)
    assert result.t_pvalue == pytest.approx(t.pvalue)
    assert result.wilcoxon_statistic == pytest.approx(w.statistic)
    assert result.wilcoxon_pvalue == pytest.approx(w.pvalue)
    assert result.cohens_d == pytest.approx(d.mean() / d.std(ddof=1))
    assert result.mean_difference == pytest.approx(d.mean())
    low, high = t.confidence_interval(0.95)
    assert result.t_interval == pytest.approx((low, high))
    assert result.difference_ci.low <= d.mean() <= result.difference_ci.high
    assert result.n == 10
    # By hand: the differences sum to 0.34.
    assert result.mean_difference == pytest.approx(0.034)
    assert result.t_statistic == pytest.approx(0.034 / (d.std(ddof=1) / np.sqrt(10)))


def test_paired_edge_cases() -> None:
    same = np.array([1.0, 2.0, 3.0])
    result = paired_comparison(same, same)
    assert (result.t_pvalue, result.wilcoxon_pvalue, result.cohens_d) == (1.0, 1.0, 0.0)
    shifted = paired_comparison(same + 1.0, same)
    assert shifted.cohens_d == np.inf and shifted.t_pvalue == 0.0
    with_nan = paired_comparison(np.array([0.1, np.nan, 0.3, 0.5]), np.array([0.0, 0.2, 0.1, 0.1]))
    assert with_nan.n == 3
    with pytest.raises(ConfigError):
        paired_comparison(np.zeros(3), np.zeros(4))
    with pytest.raises(ConfigError):
        paired_comparison(np.zeros(1), np.zeros(1))


def test_compare_results_requires_the_same_users(split) -> None:
    train, test = split
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((train.n_users, 4)), rng.standard_normal((train.n_items, 4))
    a = evaluate(lambda u: factors[0][u] @ factors[1].T, train, test)
    b = evaluate(lambda u: np.tile(np.arange(train.n_items, 0, -1.0), (len(u), 1)), train, test)
    comparison = compare_results(a, b, "ndcg@10", n_resamples=200)
    assert comparison.n == len(a.users)
    assert comparison.mean_a == pytest.approx(a.means["ndcg@10"])
    fewer = evaluate(lambda u: factors[0][u] @ factors[1].T, train, test.take(np.arange(100)))
    with pytest.raises(ConfigError, match="same users"):
        compare_results(a, fewer, "ndcg@10")
    with pytest.raises(ConfigError, match="not in the result"):
        compare_results(a, b, "auc@10")
