"""Label-DP logistic regression from noisy label sums: oracle, guarantee, noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from privrank.errors import ConfigError, NotTrainedError
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.ranking.label_sums_logistic import (
    LabelSumsConfig,
    LabelSumsLogistic,
    OneHotDesign,
    consistent_sums,
    noise_ridge_penalty,
)


def _data(n: int = 3000, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, n)
    b = rng.integers(0, 4, n)
    logit = -1.0 + 0.6 * a - 0.8 * (b == 2) + 0.9 * ((a == 1) & (b == 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return {"a": a, "b": b}, y


def _dense_one_hot(columns: dict[str, np.ndarray], crosses: bool) -> np.ndarray:
    """An independent one-hot encoding (every value of this data is frequent)."""
    parts = [np.eye(6)[columns["a"]], np.eye(4)[columns["b"]]]
    if crosses:
        parts.append(np.eye(24)[columns["a"] * 4 + columns["b"]])
    return np.hstack(parts)


@pytest.mark.parametrize("crosses", [False, True])
def test_exact_sums_equal_sklearn_logistic_regression(crosses: bool) -> None:
    """ε = inf: the fit is L2 logistic regression (sklearn, C = 1/λ, intercept unpenalised)."""
    columns, y = _data()
    config = LabelSumsConfig(crosses=(("a", "b"),) if crosses else (), l2=2.0)
    model = LabelSumsLogistic(("a", "b"), config).fit(
        columns, y, math.inf, np.random.default_rng(0)
    )
    oracle = LogisticRegression(C=1 / 2.0, tol=1e-10, max_iter=10_000).fit(
        _dense_one_hot(columns, crosses), y
    )
    expected = oracle.decision_function(_dense_one_hot(columns, crosses))
    np.testing.assert_allclose(model.decision_function(columns), expected, atol=2e-4)
    assert model.guarantee_ is None


def test_zero_noise_equals_the_non_private_fit() -> None:
    columns, y = _data()
    exact = LabelSumsLogistic(("a", "b")).fit(columns, y, math.inf, np.random.default_rng(0))
    with _noise_scale_for_testing(0.0):
        noiseless = LabelSumsLogistic(("a", "b")).fit(columns, y, 1.0, np.random.default_rng(0))
    np.testing.assert_allclose(noiseless.coef_, exact.coef_, atol=1e-6)
    assert noiseless.guarantee_ is not None


def test_guarantee_sensitivity_and_accountant() -> None:
    """Δ = fields + crosses; scale Δ/ε; dp_accounting's Laplace PLD gives back ε."""
    columns, y = _data()
    config = LabelSumsConfig(crosses=(("a", "b"),))
    model = LabelSumsLogistic(("a", "b"), config).fit(columns, y, 0.5, np.random.default_rng(1))
    g = model.guarantee_
    assert g is not None
    assert g.l1_sensitivity == 3
    assert g.laplace_scale == pytest.approx(6.0)
    assert g.accountant_epsilon == pytest.approx(0.5, abs=2e-3)


def test_noise_is_laplace_of_scale_sensitivity_over_epsilon() -> None:
    """The released sums minus the exact ones: mean 0, variance 2b², over many seeds."""
    columns, y = _data(n=400)
    design = OneHotDesign(("a", "b")).fit(columns)
    x = design.transform(columns)
    exact = x.T @ y.astype(float)
    from privrank.privacy.conversion_reports import LaplaceHistogramMechanism

    mechanism = LaplaceHistogramMechanism(1.0, design.groups)
    rng = np.random.default_rng(7)
    noise = np.stack([mechanism.add_noise(exact, rng) - exact for _ in range(4000)])
    b = design.groups / 1.0
    assert abs(noise.mean()) < 0.05 * b
    assert noise.var() == pytest.approx(2 * b * b, rel=0.05)


def test_one_label_moves_the_sums_by_at_most_the_sensitivity() -> None:
    columns, y = _data(n=200)
    design = OneHotDesign(("a", "b"), (("a", "b"),)).fit(columns)
    x = design.transform(columns)
    flipped = y.copy()
    flipped[17] = 1 - flipped[17]
    moved = np.abs(x.T @ y.astype(float) - x.T @ flipped.astype(float)).sum()
    assert moved == design.groups == 3


def test_rare_values_are_pooled_and_unseen_values_fall_in_the_rare_column() -> None:
    columns = {"a": np.array([0, 0, 0, 1, 2, 2, 2])}
    design = OneHotDesign(("a",), min_count=3).fit(columns)
    assert design.n_columns == 3  # 0, 2, rare
    x = design.transform({"a": np.array([0, 1, 2, 9])}).toarray()
    np.testing.assert_array_equal(x, [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]])
    none_frequent = OneHotDesign(("a",), min_count=10).fit(columns)
    assert none_frequent.transform(columns).toarray().tolist() == [[1.0]] * 7


def test_private_fit_still_ranks_on_large_data() -> None:
    columns, y = _data(n=20_000, seed=3)
    test_columns, test_y = _data(n=5000, seed=4)
    from sklearn.metrics import roc_auc_score

    private = LabelSumsLogistic(("a", "b")).fit(columns, y, 1.0, np.random.default_rng(5))
    exact = LabelSumsLogistic(("a", "b")).fit(columns, y, math.inf, np.random.default_rng(5))
    auc_private = roc_auc_score(test_y, private.predict_ctr(test_columns))
    auc_exact = roc_auc_score(test_y, exact.predict_ctr(test_columns))
    assert auc_private > 0.5 + 0.9 * (auc_exact - 0.5)


def test_bad_inputs() -> None:
    columns, y = _data(n=50)
    with pytest.raises(ConfigError):
        LabelSumsLogistic(("a", "b")).fit(columns, y, 0.0, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        LabelSumsLogistic(("a", "b")).fit(columns, y * 2, 1.0, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        OneHotDesign(("a",), (("a", "zz"),))
    with pytest.raises(NotTrainedError):
        LabelSumsLogistic(("a", "b")).predict_ctr(columns)


def test_consistent_sums_agree_on_the_inverse_variance_total() -> None:
    """Every group's sums add up to one total, the 1/m_g-weighted mean of the group totals
    (hand-computed here); unseen columns get 0; the change is spread equally over seen ones."""
    offsets = np.array([0, 2, 6])  # group 0: 2 columns, group 1: 4 columns
    counts = np.array([10, 10, 5, 5, 5, 0])
    noisy = np.array([3.0, 4.0, 1.0, 2.0, 3.0, 1.5])  # totals 7 and 7.5
    total_expected = (7.0 / 2 + 7.5 / 4) / (1 / 2 + 1 / 4)
    sums, total = consistent_sums(noisy, counts, offsets)
    assert total == pytest.approx(total_expected)
    assert sums[:2].sum() == pytest.approx(total) and sums[2:].sum() == pytest.approx(total)
    assert sums[5] == 0.0
    np.testing.assert_allclose(sums[:2] - noisy[:2], (total - 7.0) / 2)
    np.testing.assert_allclose(sums[2:5] - noisy[2:5], (total - 6.0) / 3)


def test_consistent_sums_leave_exact_sums_unchanged() -> None:
    columns, y = _data()
    design = OneHotDesign(("a", "b"), (("a", "b"),), min_count=200).fit(columns)
    x = design.transform(columns)
    counts = np.asarray(x.sum(axis=0)).ravel()
    exact = x.T @ y.astype(float)
    assert design.offsets_ is not None
    sums, total = consistent_sums(exact, counts, design.offsets_)
    np.testing.assert_allclose(sums, exact, atol=1e-9)
    assert total == pytest.approx(y.sum())


def test_consistent_sums_cut_the_error_of_the_total() -> None:
    """The weighted total's error is far below the plain mean's when one group is wide."""
    rng = np.random.default_rng(0)
    offsets = np.array([0, 3, 403])
    counts = np.full(403, 100)
    exact = np.concatenate([[30.0, 30.0, 40.0], np.full(400, 0.25)])  # both groups: 100
    errors_weighted, errors_mean = [], []
    for _ in range(400):
        noisy = exact + rng.laplace(0.0, 2.0, exact.size)
        _, total = consistent_sums(noisy, counts, offsets)
        errors_weighted.append(total - 100.0)
        errors_mean.append(np.add.reduceat(noisy, offsets[:-1]).mean() - 100.0)
    assert np.std(errors_weighted) < 0.3 * np.std(errors_mean)


def test_noise_ridge_penalty_by_hand() -> None:
    """Two columns of one group, N = 100 rows: the formula worked out on paper."""
    sums, counts, total, b, c = np.array([30.0, 10.0]), np.array([50.0, 50.0]), 40.0, 2.0, 0.5
    p = 0.4
    excess = [(0.6 - p) ** 2 - 2 * 4 / 2500 - p * (1 - p) / 50, (0.2 - p) ** 2 - 8 / 2500 - 0.0048]
    spread = np.mean(excess) / (p * (1 - p)) ** 2
    expected = c * 2 * b**2 / spread
    assert noise_ridge_penalty(sums, total, counts, 100, b, c) == pytest.approx(expected)
    assert noise_ridge_penalty(sums, total, counts, 100, b, 2 * c) == pytest.approx(2 * expected)
    assert noise_ridge_penalty(sums, total, counts, 100, 0.0, c) == 0.0
    assert noise_ridge_penalty(sums, total, counts, 100, b, 0.0) == 0.0


def test_noise_ridge_penalty_reads_the_spread_of_the_true_weights() -> None:
    """Exact sums of columns whose logits spread with a known τ: σ²/τ̂² recovers σ²/τ²."""
    rng = np.random.default_rng(3)
    tau, p, n = 0.5, 0.2, np.full(400, 5000.0)
    logits = np.log(p / (1 - p)) + tau * rng.standard_normal(n.size)
    sums = rng.binomial(n.astype(np.int64), 1 / (1 + np.exp(-logits))).astype(np.float64)
    b = 3.0
    got = noise_ridge_penalty(sums, float(sums.sum()), n, int(n.sum()), b, 1.0)
    # the rate spread linearised at p: within 35 % of 2b²/τ² (the link is not linear)
    assert got == pytest.approx(2 * b**2 / tau**2, rel=0.35)


def test_a_private_fit_adds_the_noise_ridge_and_a_public_one_does_not() -> None:
    columns, y = _data(n=20_000, seed=4)
    exact = LabelSumsLogistic(("a", "b"), LabelSumsConfig(l2=2.0)).fit(
        columns, y, math.inf, np.random.default_rng(0)
    )
    assert exact.l2_ == 2.0
    private = LabelSumsLogistic(("a", "b"), LabelSumsConfig(l2=2.0)).fit(
        columns, y, 1.0, np.random.default_rng(0)
    )
    assert private.l2_ > 2.0
    off = LabelSumsLogistic(("a", "b"), LabelSumsConfig(l2=2.0, noise_ridge=0.0)).fit(
        columns, y, 1.0, np.random.default_rng(0)
    )
    assert off.l2_ == 2.0
