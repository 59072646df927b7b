"""CTR metrics against scikit-learn (the oracle) and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from privrank.metrics.ctr import (
    auc,
    compare_ctr,
    ctr_metrics,
    expected_calibration_error,
    log_loss,
    normalized_entropy,
    reliability,
)
from privrank.metrics.stats import bootstrap_ci


def _data(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, n)
    p = np.round(p, 2)  # ties
    y = (rng.uniform(size=n) < p).astype(float)
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_log_loss_match_scikit_learn(seed: int) -> None:
    y, p = _data(seed)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p), abs=1e-12)
    w = np.random.default_rng(seed).integers(0, 3, len(y)).astype(float)
    assert auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
    assert log_loss(y, p, w) == pytest.approx(sk_log_loss(y, p, sample_weight=w), abs=1e-12)


def test_normalized_entropy_and_ece_by_hand() -> None:
    y = np.array([1, 0, 0, 0.0])
    p = np.array([0.25, 0.25, 0.25, 0.25])
    # predicting the base rate: NE is exactly 1, and calibration is perfect
    assert normalized_entropy(y, p) == pytest.approx(1.0)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    # two bins of two rows: |0.5 - 0.1| and |1 - 0.9|, each half the mass
    y = np.array([1, 0, 1, 1.0])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    points = reliability(y, p, n_bins=10)
    assert points.counts[1] == 2 and points.observed_rate[9] == 1.0


def test_bootstrap_cis_share_the_resamples_of_metrics_stats() -> None:
    y, p = _data(3, 500)
    cis = ctr_metrics(y, p, n_resamples=200, seed=7)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    reference = bootstrap_ci(losses, n_resamples=200, seed=7)  # the mean's CI, same draws
    assert cis["log_loss"].low == pytest.approx(reference.low, rel=1e-9)
    assert cis["log_loss"].high == pytest.approx(reference.high, rel=1e-9)
    assert cis["auc"].low < cis["auc"].estimate < cis["auc"].high


def test_paired_comparison_finds_a_better_model() -> None:
    y, p = _data(4, 3000)
    noisy = np.clip(p + np.random.default_rng(0).normal(0, 0.3, len(p)), 0.01, 0.99)
    c = compare_ctr(y, p, noisy, n_resamples=300)
    assert c.auc.difference > 0 and c.auc.difference_ci.low > 0 and c.auc.pvalue < 0.01
    assert c.log_loss.mean_difference < 0 and c.log_loss.t_pvalue < 0.01
    same = compare_ctr(y, p, p, n_resamples=50)
    assert same.auc.difference == 0 and same.log_loss.t_pvalue == 1.0
