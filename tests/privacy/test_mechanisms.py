"""Gaussian mechanisms on bounded sufficient statistics: sensitivities by brute force, noise
calibration (mean and variance), seeding, refusals and post-processing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.models import Query
from privrank.privacy.accounting import calibrate_gaussian_noise, gaussian_epsilon
from privrank.privacy.mechanisms import (
    GaussianMechanism,
    PrivacyGuarantee,
    _noise_scale_for_testing,
    gram_sensitivity,
    item_count_sensitivity,
    private_gram,
    private_item_counts,
    spectral_denoise,
    symmetric_gaussian_noise,
)
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

BOUND = 5


def bounded_matrix(bound: int = BOUND, n_users: int = 30, n_items: int = 20) -> sp.csr_matrix:
    """Binary matrix of a small dataset after the spec's contribution bound."""
    data = synthetic_interactions(n_users=n_users, n_items=n_items, per_user=8, seed=1)
    spec = PrivacySpec(epsilon=1.0, max_interactions_per_user=bound)
    indptr, items = spec.bound_contributions(data).sequences()
    return Query(indptr=indptr, items=items.astype(np.int64)).to_csr(data.n_items, np.float64)


def spec(epsilon: float = 1.0, seed: int | None = 0, bound: int | None = BOUND, **kw):
    return PrivacySpec(
        epsilon=epsilon, max_interactions_per_user=bound, noise_seed=seed, **kw
    ).resolve(30)


def without_each_user(matrix: sp.csr_matrix):
    for user in range(matrix.shape[0]):
        keep = np.arange(matrix.shape[0]) != user
        yield matrix[keep]


def item_counts(matrix: sp.csr_matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=0)).ravel()


def upper(gram: np.ndarray) -> np.ndarray:
    return gram[np.triu_indices(gram.shape[0])]


# -------------------------------------------------------------------- sensitivities
def test_item_count_sensitivity_matches_brute_force():
    matrix = bounded_matrix()
    assert np.diff(matrix.indptr).max() == BOUND  # some user reaches the bound
    full = item_counts(matrix)
    largest = max(np.linalg.norm(full - item_counts(m)) for m in without_each_user(matrix))
    assert largest == pytest.approx(item_count_sensitivity(BOUND)) == pytest.approx(math.sqrt(5))


def test_gram_sensitivity_matches_brute_force():
    matrix = bounded_matrix()
    full = (matrix.T @ matrix).toarray()
    upper_changes, frobenius_changes = [], []
    for smaller in without_each_user(matrix):
        diff = full - (smaller.T @ smaller).toarray()
        upper_changes.append(np.linalg.norm(upper(diff)))
        frobenius_changes.append(np.linalg.norm(diff))
    # The released upper triangle (with the diagonal): sqrt(c(c+1)/2); the full matrix: c.
    assert max(upper_changes) == pytest.approx(gram_sensitivity(BOUND))
    assert gram_sensitivity(BOUND) == pytest.approx(math.sqrt(15))
    assert max(frobenius_changes) == pytest.approx(BOUND)


@pytest.mark.parametrize("bound", [1, 2, 7])
def test_sensitivities_are_upper_bounds_for_other_caps(bound):
    matrix = bounded_matrix(bound)
    full_counts, full_gram = item_counts(matrix), (matrix.T @ matrix).toarray()
    for smaller in without_each_user(matrix):
        assert (
            np.linalg.norm(full_counts - item_counts(smaller))
            <= item_count_sensitivity(bound) + 1e-12
        )
        gram = (smaller.T @ smaller).toarray()
        assert np.linalg.norm(upper(full_gram - gram)) <= gram_sensitivity(bound) + 1e-12


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_sensitivity_refuses_a_bad_bound(bad):
    with pytest.raises(ConfigError):
        item_count_sensitivity(bad)
    with pytest.raises(ConfigError):
        gram_sensitivity(bad)


# -------------------------------------------------------------------- calibration
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 8.0])
def test_noise_is_calibrated_to_the_target(epsilon):
    s = spec(epsilon)
    _counts, guarantee = private_item_counts(bounded_matrix(), s)
    m = calibrate_gaussian_noise(epsilon, s.delta)
    assert guarantee.noise_multiplier == pytest.approx(m)
    assert guarantee.noise_std == pytest.approx(m * math.sqrt(BOUND))
    assert guarantee.sensitivity == pytest.approx(math.sqrt(BOUND))
    # The release meets the target, and is tight (not over-noised).
    assert gaussian_epsilon(m, s.delta) <= epsilon * (1 + 1e-9)
    assert gaussian_epsilon(m * 0.99, s.delta) > epsilon
    assert guarantee.epsilon == epsilon and guarantee.delta == s.delta
    assert guarantee.unit == "user" and guarantee.contribution_bound == BOUND
    # The spec's accountant agrees with the exact ε (PLD to its discretisation).
    assert guarantee.accountant == "pld"
    assert guarantee.accountant_epsilon == pytest.approx(epsilon, rel=0.02)


def test_item_count_noise_has_the_calibrated_mean_and_variance():
    matrix = bounded_matrix()
    exact = item_counts(matrix)
    draws = np.stack(
        [private_item_counts(matrix, spec(1.0, seed=s))[0] - exact for s in range(2000)]
    )
    sigma = private_item_counts(matrix, spec(1.0))[1].noise_std
    samples = draws.ravel()
    n = samples.size
    assert abs(samples.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(samples.var() - sigma**2) < 5 * sigma**2 * math.sqrt(2 / n)
    # Independent across items: the empirical correlation of two items is near zero.
    assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 5 / math.sqrt(len(draws))


def test_gram_noise_is_symmetric_with_the_calibrated_mean_and_variance():
    matrix = bounded_matrix(n_items=120, n_users=60)
    exact = (matrix.T @ matrix).toarray()
    s = PrivacySpec(epsilon=2.0, max_interactions_per_user=BOUND, noise_seed=3).resolve(60)
    noisy, guarantee = private_gram(matrix, s)
    noise = noisy - exact
    np.testing.assert_array_equal(noise, noise.T)
    samples = upper(noise)
    n = samples.size
    sigma = guarantee.noise_std
    assert sigma == pytest.approx(calibrate_gaussian_noise(2.0, s.delta) * math.sqrt(15))
    assert abs(samples.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(samples.var() - sigma**2) < 5 * sigma**2 * math.sqrt(2 / n)
    diagonal = np.diagonal(noise)
    assert abs(diagonal.var() - sigma**2) < 6 * sigma**2 * math.sqrt(2 / diagonal.size)


def test_symmetric_noise_draws_each_upper_entry_once():
    noise = symmetric_gaussian_noise(4, 2.0, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    expected = np.concatenate([rng.standard_normal(4 - row) for row in range(4)]) * 2.0
    np.testing.assert_array_equal(upper(noise), expected)
    np.testing.assert_array_equal(noise, noise.T)


# -------------------------------------------------------------------- seeding
def test_same_seed_same_release_other_seed_differs():
    matrix = bounded_matrix()
    first, _ = private_gram(matrix, spec(seed=5))
    again, _ = private_gram(matrix, spec(seed=5))
    other, _ = private_gram(matrix, spec(seed=6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    a, _ = private_item_counts(matrix, spec(seed=5))
    b, _ = private_item_counts(matrix, spec(seed=5))
    np.testing.assert_array_equal(a, b)


def test_unseeded_releases_differ():
    matrix = bounded_matrix()
    first, _ = private_item_counts(matrix, spec(seed=None))
    second, _ = private_item_counts(matrix, spec(seed=None))
    assert not np.array_equal(first, second)


# -------------------------------------------------------------------- refusals
def test_no_contribution_bound_is_refused():
    with pytest.raises(ConfigError, match="contribution bound"):
        private_gram(bounded_matrix(), spec(bound=None))
    with pytest.raises(ConfigError, match="contribution bound"):
        private_item_counts(bounded_matrix(), spec(bound=None))


def test_unresolved_delta_is_refused():
    raw = PrivacySpec(epsilon=1.0, max_interactions_per_user=BOUND)
    with pytest.raises(ConfigError, match="not resolved"):
        private_item_counts(bounded_matrix(), raw)


def test_a_user_over_the_bound_is_refused():
    with pytest.raises(ConfigError, match="bound_contributions"):
        private_gram(bounded_matrix(bound=7), spec(bound=BOUND))


def test_a_non_binary_matrix_is_refused():
    matrix = bounded_matrix()
    matrix.data[:] = 2.0
    with pytest.raises(ConfigError, match="binary"):
        private_item_counts(matrix, spec())


def test_the_mechanism_needs_a_spec_and_a_positive_sensitivity():
    with pytest.raises(ConfigError):
        GaussianMechanism({"epsilon": 1}, 1.0, mechanism="m", statistic="s", n_users=1)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ConfigError):
            GaussianMechanism(spec(), bad, mechanism="m", statistic="s", n_users=1)


# -------------------------------------------------------------------- test-only switch
def test_zero_noise_switch_is_test_only_and_recorded():
    matrix = bounded_matrix()
    with _noise_scale_for_testing(0.0):
        counts, guarantee = private_item_counts(matrix, spec())
        gram, gram_guarantee = private_gram(matrix, spec())
    np.testing.assert_array_equal(counts, item_counts(matrix))
    np.testing.assert_array_equal(gram, (matrix.T @ matrix).toarray())
    assert not guarantee.is_private and not gram_guarantee.is_private
    assert guarantee.describe().startswith("NOT PRIVATE")
    # Outside the block the calibrated noise is back.
    counts, guarantee = private_item_counts(matrix, spec())
    assert guarantee.noise_scale_for_testing == 1.0
    assert not np.array_equal(counts, item_counts(matrix))
    with pytest.raises(ConfigError), _noise_scale_for_testing(-1.0):
        pass


# -------------------------------------------------------------------- guarantee, post-processing
def test_guarantee_round_trips_and_describes_itself():
    _, guarantee = private_gram(bounded_matrix(), spec(8.0))
    again = PrivacyGuarantee.from_dict(guarantee.to_dict())
    assert again == guarantee
    text = guarantee.describe()
    assert "user-level (ε=8" in text and "entire history" in text and "at most 5" in text
    with pytest.raises(ValueError):
        PrivacyGuarantee.from_dict({"epsilon": 1.0})


def test_spectral_denoise_returns_a_psd_matrix():
    rng = np.random.default_rng(0)
    noisy = symmetric_gaussian_noise(30, 1.0, rng) + np.outer(np.arange(30), np.arange(30)) / 10
    for threshold in (0.0, 0.5, 1.0):
        out = spectral_denoise(noisy, 1.0, threshold)
        np.testing.assert_array_equal(out, out.T)
        assert np.linalg.eigvalsh(out).min() > -1e-8
    # Without noise, a PSD matrix is left as it is (up to rounding).
    exact = (bounded_matrix().T @ bounded_matrix()).toarray()
    np.testing.assert_allclose(spectral_denoise(exact, 0.0, 0.5), exact, atol=1e-9)
    with pytest.raises(ConfigError):
        spectral_denoise(exact, 1.0, -1.0)
