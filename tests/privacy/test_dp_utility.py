"""The utility-oriented private release (bounded-norm counts and Gram block, composed budget,
item choice from released counts, popularity prior): sensitivities by brute force, the
composition against the accountants, zero noise against hand-computed oracles, and the model
post-processing that reads it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.models import EASE, FitOptions, ItemKNN, MostPopular, Query, Recommender
from privrank.models.ease import ease_weights_from_gram
from privrank.privacy.accounting import (
    Accountant,
    calibrate_gaussian_noise,
    gaussian_epsilon,
    gaussian_event,
)
from privrank.privacy.gram_release import (
    count_row_weights,
    gram_row_weights,
    private_gram_release,
    signal_items,
)
from privrank.privacy.mechanisms import (
    _noise_scale_for_testing,
    gram_sensitivity,
    item_count_sensitivity,
)
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

DATA = synthetic_interactions(n_users=60, n_items=40, seed=0)
MAX_ITEMS = int(DATA.user_counts().max())


def varied_matrix(n_users: int = 30, n_items: int = 20, seed: int = 2) -> sp.csr_matrix:
    """Binary rows of every length from 0 to 12 (so weights 1 and < 1 both occur)."""
    rng = np.random.default_rng(seed)
    rows = [rng.choice(n_items, size=user % 13, replace=False) for user in range(n_users)]
    indptr = np.cumsum([0] + [r.size for r in rows])
    indices = np.concatenate(rows).astype(np.int64)
    return sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n_users, n_items))


ACTIVE = np.flatnonzero(DATA.user_counts() > 0)  # empty histories score the cold start


def matrix_of(data, bound: int) -> sp.csr_matrix:
    spec = PrivacySpec(epsilon=1.0, max_interactions_per_user=bound)
    indptr, items = spec.bound_contributions(data).sequences()
    return Query(indptr=indptr, items=items.astype(np.int64)).to_csr(data.n_items, np.float64)


def spec(epsilon=2.0, bound=MAX_ITEMS, seed=0, **kw) -> PrivacySpec:
    return PrivacySpec(
        epsilon=epsilon, max_interactions_per_user=bound, noise_seed=seed, **kw
    ).resolve(DATA.n_users)


def weighted_counts(matrix: sp.csr_matrix, norm: float) -> np.ndarray:
    weights = count_row_weights(np.diff(matrix.indptr), norm)
    return np.asarray(matrix.T @ weights).ravel()


def weighted_gram(matrix: sp.csr_matrix, norm: float) -> np.ndarray:
    weights = gram_row_weights(np.diff(matrix.indptr), norm)
    return (matrix.T @ sp.diags(weights) @ matrix).toarray()


def upper(gram: np.ndarray) -> np.ndarray:
    return gram[np.triu_indices(gram.shape[0])]


def largest_change(matrix: sp.csr_matrix, statistic) -> float:
    """max over users of ‖f(X) − f(X without that user)‖₂ (brute force)."""
    full = statistic(matrix)
    return max(
        np.linalg.norm(full - statistic(matrix[np.arange(matrix.shape[0]) != user]))
        for user in range(matrix.shape[0])
    )


# -------------------------------------------------------------------- sensitivities
@pytest.mark.parametrize("norm", [1.0, 2.0, math.sqrt(5), 3.4, 5.0])
def test_weighted_count_sensitivity_is_the_norm_by_brute_force(norm):
    matrix = varied_matrix()
    change = largest_change(matrix, lambda m: weighted_counts(m, norm))
    # Attained by every down-weighted user; ≤ √12 (the largest user) when nobody is.
    assert change == pytest.approx(min(norm, math.sqrt(12)))
    # Hand check of one weight: k items, weight min(1, C/√k).
    assert count_row_weights(np.array([16, 1]), 2.0) == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize("norm", [1.0, 3.0, 7.5, 20.0])
def test_weighted_gram_sensitivity_is_the_norm_by_brute_force(norm):
    matrix = varied_matrix()
    change = largest_change(matrix, lambda m: upper(weighted_gram(m, norm)))
    # √(12·13/2) = √78 for the largest user when nobody is down-weighted.
    assert change == pytest.approx(min(norm, math.sqrt(78)))
    # k = 4 items: 10 upper entries, weight min(1, C/√10).
    assert gram_row_weights(np.array([4]), 1.0) == pytest.approx([1 / math.sqrt(10)])


def test_weighted_gram_of_any_item_block_keeps_the_sensitivity():
    """Restricting each user to a block of items before weighting (their own data only)."""
    matrix = varied_matrix()
    block = np.array([3, 0, 17, 15, 8, 11, 19])
    change = largest_change(matrix, lambda m: upper(weighted_gram(m[:, block], 2.0)))
    assert change <= 2.0 + 1e-12


def test_a_norm_at_the_plain_sensitivity_reweights_nobody():
    bound = 6
    matrix = matrix_of(DATA, bound)
    lengths = np.diff(matrix.indptr)
    assert (count_row_weights(lengths, item_count_sensitivity(bound)) == 1).all()
    assert (gram_row_weights(lengths, gram_sensitivity(bound)) == 1).all()


# -------------------------------------------------------------------- item choice
def test_signal_items_matches_a_brute_force_rule():
    rng = np.random.default_rng(4)
    for _ in range(50):
        counts = rng.normal(20, 15, size=rng.integers(1, 60)).round(1)
        sigma, ratio = rng.uniform(0.1, 5), rng.uniform(0, 3)
        order = sorted(range(counts.size), key=lambda i: (-counts[i], i))
        n = 0
        for size in range(1, counts.size + 1):
            if counts[order[size - 1]] >= ratio * sigma * math.sqrt(size):
                n = size
            else:
                break
        np.testing.assert_array_equal(signal_items(counts, sigma, ratio), order[:n])
    # No noise: every non-negative count is kept.
    assert signal_items(np.array([3.0, 0.0, 5.0]), 0.0, 2.0).tolist() == [2, 0, 1]


# -------------------------------------------------------------------- the release
def test_release_without_noise_is_the_exact_weighted_statistic():
    matrix = matrix_of(DATA, MAX_ITEMS)
    with _noise_scale_for_testing(0.0):
        release = private_gram_release(
            matrix, spec(), count_share=0.4, count_norm=2.0, gram_norm=3.0, max_items=12
        )
    np.testing.assert_allclose(release.counts, weighted_counts(matrix, 2.0))
    expected_items = np.lexsort((np.arange(40), -weighted_counts(matrix, 2.0)))[:12]
    np.testing.assert_array_equal(release.items, expected_items)
    np.testing.assert_allclose(release.gram, weighted_gram(matrix[:, expected_items], 3.0))
    assert not release.guarantee.is_private and release.gram_std == 0


def test_release_noise_matches_the_composed_calibration():
    """Counts get σ_n = C_n·m/√ρ, the Gram block σ_G = C·m/√(1 − ρ) (m: one release's
    multiplier for the spec's ε, δ); checked on the residuals of many draws."""
    matrix = matrix_of(DATA, MAX_ITEMS)
    share, count_norm, gram_norm = 0.3, 2.0, 3.0
    exact_counts = weighted_counts(matrix, count_norm)
    exact_gram = upper(weighted_gram(matrix, gram_norm))
    count_noise, gram_noise = [], []
    for seed in range(60):
        release = private_gram_release(
            matrix, spec(seed=seed), count_share=share, count_norm=count_norm, gram_norm=gram_norm
        )
        count_noise.append(release.counts - exact_counts)
        gram_noise.append(upper(release.gram) - exact_gram)
    m = calibrate_gaussian_noise(2.0, 1 / (10 * DATA.n_users))
    for noise, sigma in (
        (np.concatenate(count_noise), count_norm * m / math.sqrt(share)),
        (np.concatenate(gram_noise), gram_norm * m / math.sqrt(1 - share)),
    ):
        n = noise.size
        assert abs(noise.mean()) < 5 * sigma / math.sqrt(n)
        assert abs(noise.var() - sigma**2) < 5 * sigma**2 * math.sqrt(2 / n)


@pytest.mark.parametrize("share", [0.1, 0.3, 0.6])
def test_composed_release_meets_the_target_epsilon(share):
    """The two releases are √ρ/m- and √(1−ρ)/m-Gaussian DP: one 1/m-GDP release, ε exact.
    Independent checks: the exact ε of the equivalent single release, and the PLD accountant
    composing the two Gaussian events (an upper bound within its discretisation)."""
    matrix = matrix_of(DATA, MAX_ITEMS)
    target = spec(epsilon=1.5)
    release = private_gram_release(matrix, target, count_share=share, gram_norm=2.0)
    g = release.guarantee
    m_counts, m_gram = (release.noise_multiplier for release in g.composition)
    assert g.releases == 2 and g.sensitivity == 2.0
    assert g.noise_std == pytest.approx(m_gram * 2.0)
    equivalent = 1 / math.sqrt(1 / m_counts**2 + 1 / m_gram**2)
    assert gaussian_epsilon(equivalent, target.delta) == pytest.approx(1.5, rel=1e-6)
    pld = Accountant("pld").compose(gaussian_event(m_counts)).compose(gaussian_event(m_gram))
    assert pld.epsilon(target.delta) == pytest.approx(1.5, abs=0.02)
    assert g.accountant_epsilon == pytest.approx(pld.epsilon(target.delta))
    # Either release alone is cheaper than the whole.
    assert gaussian_epsilon(m_gram, target.delta) < 1.5


def test_release_refuses_bad_arguments():
    matrix = matrix_of(DATA, MAX_ITEMS)
    for kwargs in (
        {"count_share": 1.0},
        {"count_share": -0.1},
        {"gram_norm": 0.0},
        {"count_norm": float("inf"), "count_share": 0.2},
        {"signal_ratio": 1.0},  # choosing items needs the count release
        {"max_items": 5},
    ):
        with pytest.raises(ConfigError):
            private_gram_release(matrix, spec(), **kwargs)
    with pytest.raises(ConfigError, match="contribution bound"):
        private_gram_release(matrix_of(DATA, MAX_ITEMS), spec(bound=3))


# -------------------------------------------------------------------- models on the release
def test_zero_noise_with_reweighting_equals_ease_on_the_hand_weighted_gram():
    matrix = matrix_of(DATA, MAX_ITEMS)
    model = EASE(
        regularization=20.0,
        dtype="float64",
        private={
            "count_share": 0.5,
            "count_norm": 2.0,
            "gram_norm": 3.0,
            "signal_ratio": None,
            "max_items": 15,
            "denoising": 0.0,
        },
    )
    with _noise_scale_for_testing(0.0):
        model.fit(DATA, FitOptions(threads=1, privacy=spec()))
    counts = weighted_counts(matrix, 2.0)
    items = np.lexsort((np.arange(40), -counts))[:15]
    gram = weighted_gram(matrix[:, items], 3.0)
    scale = min(1.0, np.trace(gram) / counts[items].sum())  # the reweighted Gram's scale
    weights = ease_weights_from_gram(gram, 20.0 * scale, "float64")
    expected = np.zeros((DATA.n_users, 40))
    expected[:, items] = matrix[:, items] @ weights  # every user is under the bound
    np.testing.assert_allclose(model.score(ACTIVE), expected[ACTIVE], atol=1e-5)
    np.testing.assert_array_equal(model.items_, items)
    np.testing.assert_allclose(model.item_popularity_, counts, rtol=1e-6)


@pytest.mark.parametrize("factory", [EASE, ItemKNN])
def test_zero_noise_with_norms_no_user_exceeds_equals_the_non_private_model(factory):
    bound = MAX_ITEMS
    plain = factory().fit(DATA, FitOptions(threads=1))
    settings = {
        "count_norm": item_count_sensitivity(bound),
        "gram_norm": gram_sensitivity(bound),
        "signal_ratio": 3.0,
        "popularity_weight": 5.0,
    }
    with _noise_scale_for_testing(0.0):
        zero = factory(private=settings).fit(DATA, FitOptions(threads=1, privacy=spec(bound=bound)))
    users = np.arange(DATA.n_users)
    np.testing.assert_allclose(zero.score(users), plain.score(users), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(zero.item_popularity_, plain.item_popularity_)


@pytest.mark.parametrize("factory", [EASE, ItemKNN])
def test_a_heavy_popularity_prior_ranks_like_the_private_popularity(factory):
    model = factory(private={"popularity_weight": 1e6}).fit(
        DATA, FitOptions(threads=1, privacy=spec(epsilon=0.5, bound=6))
    )
    users = np.arange(DATA.n_users)
    codes, _ = model.recommend(users, 5)
    popularity = model.item_popularity_
    seen = DATA.to_csr().toarray() > 0
    for user in users:
        ranked = [i for i in np.lexsort((np.arange(40), -popularity)) if not seen[user, i]]
        np.testing.assert_array_equal(codes[user], ranked[:5])
    # The prior is β · m · p / max(p), added to every score.
    g = model.privacy_guarantee_
    np.testing.assert_allclose(
        model.prior_, 1e6 * g.noise_multiplier * popularity / popularity.max(), rtol=1e-5
    )


def test_a_block_model_scores_only_its_items_and_survives_save_and_load(tmp_path):
    model = EASE(regularization=20.0, private={"max_items": 10, "popularity_weight": 0.5})
    model.fit(DATA, FitOptions(threads=1, privacy=spec(epsilon=4.0, bound=6)))
    assert model.items_.size == 10 and model.weights_.shape == (10, 10)
    scores = model.score(ACTIVE)
    outside = np.setdiff1d(np.arange(40), model.items_)
    np.testing.assert_array_equal(
        scores[:, outside], np.broadcast_to(model.prior_[outside], (ACTIVE.size, 30))
    )
    assert not np.array_equal(
        scores[:, model.items_], np.broadcast_to(model.prior_[model.items_], (ACTIVE.size, 10))
    )
    loaded = Recommender.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score(ACTIVE), scores)
    assert loaded.privacy_guarantee_ == model.privacy_guarantee_
    assert loaded.privacy_guarantee_.releases == 2


def test_an_empty_block_falls_back_to_the_prior():
    model = EASE(private={"signal_ratio": 1e9, "popularity_weight": 1.0})
    model.fit(DATA, FitOptions(threads=1, privacy=spec(epsilon=1.0, bound=6)))
    assert model.items_.size == 0
    np.testing.assert_allclose(model.score([0])[0], model.prior_)


def test_config_refuses_an_item_choice_without_a_count_release():
    with pytest.raises(ConfigError, match=r"private\.count_share"):
        EASE(private={"count_share": 0.0})  # the default signal ratio needs counts
    EASE(private={"count_share": 0.0, "signal_ratio": None})  # whole-Gram release: fine
    assert MostPopular().supports_privacy


@pytest.mark.parametrize("ridge", [False, True])
def test_dp_ease_post_processing_matches_a_recomputation_from_the_release(ridge):
    """The fit is the release (same noise seed) run through: spectral soft-thresholding at
    τ = d·2σ√N, the ridge sλ (+ τ with ``private.denoising_ridge``), the EASE solve."""
    settings = {
        "count_share": 0.3,
        "count_norm": 2.0,
        "gram_norm": 3.0,
        "signal_ratio": 0.5,
        "denoising": 0.7,
    }
    model = EASE(
        regularization=20.0, dtype="float64", private={**settings, "denoising_ridge": ridge}
    )
    model.fit(DATA, FitOptions(threads=1, privacy=spec(epsilon=8.0, seed=9)))
    release = private_gram_release(
        matrix_of(DATA, MAX_ITEMS),
        spec(epsilon=8.0, seed=9),
        count_share=0.3,
        count_norm=2.0,
        gram_norm=3.0,
        signal_ratio=0.5,
    )
    n = release.items.size
    assert 0 < n < 40
    np.testing.assert_array_equal(model.items_, release.items)
    sigma = release.gram_std
    values, vectors = np.linalg.eigh(release.gram)
    tau = 0.7 * 2 * sigma * math.sqrt(n)
    block = (vectors * np.maximum(values - tau, 0)) @ vectors.T
    scale = min(1.0, np.trace(release.gram) / np.maximum(release.counts, 0)[release.items].sum())
    ridge_value = 20.0 * scale + (tau if ridge else 0.0)
    inverse = np.linalg.inv(block + ridge_value * np.eye(n))
    expected = -inverse / np.diagonal(inverse)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights_, expected, atol=1e-8)


def test_norm_bounds_above_what_the_cap_allows_use_the_caps_tighter_sensitivity():
    bound = 4
    matrix = matrix_of(DATA, bound)
    loose = private_gram_release(matrix, spec(bound=bound), count_norm=100.0, gram_norm=100.0)
    capped = private_gram_release(matrix, spec(bound=bound), count_norm=None, gram_norm=None)
    # No user with at most 4 items reaches a norm of 100: the cap's bounds are the sensitivity.
    assert loose.guarantee.sensitivity == capped.guarantee.sensitivity == gram_sensitivity(bound)
    assert loose.gram_std == capped.gram_std and loose.count_std == capped.count_std
    np.testing.assert_array_equal(loose.gram, capped.gram)
