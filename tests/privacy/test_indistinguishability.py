"""Indistinguishability by simulation: a private fit on D and on D' = D minus one worst-case user
(a user with exactly ``c`` items) satisfies ``P[M(D) ∈ S] ≤ e^ε P[M(D') ∈ S] + δ`` (and the same
with D and D' swapped) for a family of threshold sets S on scalar outputs the user influences
most, checked with one-sided Clopper-Pearson margins; and the same check catches a broken
mechanism (noise scaled by 0.1).

DP-MostPopular is simulated at the mechanism (:func:`private_item_counts`, many seeds); the
scalar is the sum of the noisy counts of the user's items, the likelihood-ratio statistic of the
Gaussian mechanism, on which threshold sets are the worst case. DP-EASE is simulated end to end
(many private fits through the model API); the scalars are its released cold-start popularity of
the user's items, and the score of each of the user's items with the user's other items folded in
(summed), both read through the public scoring API.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from privrank.data.interactions import Interactions
from privrank.models import EASE, FitOptions, Query
from privrank.privacy.mechanisms import _noise_scale_for_testing, private_item_counts
from privrank.privacy.spec import PrivacySpec

BOUND = 4
DELTA = 1e-5
EPSILON = 1.0
ALPHA = 0.01  # false-alarm level of each check, split over its sets (Bonferroni)


def _datasets() -> tuple[Interactions, Interactions, np.ndarray]:
    """A tiny D (30 users × 12 items, 4 items each) and D' without user 0 (same vocabulary)."""
    rng = np.random.default_rng(0)
    histories = [rng.choice(12, BOUND, replace=False) for _ in range(30)]
    users = np.repeat(np.arange(30), BOUND)
    items = np.concatenate(histories)
    full = Interactions.from_codes(users, items, n_users=30, n_items=12)
    keep = users != 0
    without = Interactions.from_codes(users[keep], items[keep], n_users=30, n_items=12)
    return full, without, np.sort(histories[0])


D, D_PRIME, TARGET = _datasets()


def _spec(seed: int) -> PrivacySpec:
    return PrivacySpec(
        epsilon=EPSILON, delta=DELTA, max_interactions_per_user=BOUND, noise_seed=seed
    )


def worst_violation(a: np.ndarray, b: np.ndarray, epsilon: float, delta: float) -> float:
    """``max_S [lower(P[A ∈ S]) − e^ε · upper(P[B ∈ S]) − δ]`` over threshold sets, both ways.

    S ranges over ``{x > t}`` and ``{x ≤ t}`` for 19 pooled quantiles ``t``; ``lower``/``upper``
    are one-sided Clopper-Pearson bounds at level ``ALPHA`` divided by the number of
    comparisons. A positive value is a violation of (ε, δ)-DP at confidence ``1 − ALPHA``.
    """
    thresholds = np.quantile(np.concatenate([a, b]), np.linspace(0.05, 0.95, 19))
    comparisons = 2 * 2 * thresholds.size
    level = ALPHA / comparisons
    worst = -math.inf
    for first, second in ((a, b), (b, a)):
        n1, n2 = first.size, second.size
        for t in thresholds:
            for hits1, hits2 in (
                ((first > t).sum(), (second > t).sum()),
                ((first <= t).sum(), (second <= t).sum()),
            ):
                low = scipy.stats.beta.ppf(level, hits1, n1 - hits1 + 1) if hits1 else 0.0
                high = scipy.stats.beta.ppf(1 - level, hits2 + 1, n2 - hits2) if hits2 < n2 else 1.0
                worst = max(worst, low - math.exp(epsilon) * high - delta)
    return worst


# -------------------------------------------------------------------- DP-MostPopular
def _count_statistic(data: Interactions, runs: int, offset: int) -> np.ndarray:
    matrix = data.to_csr()
    return np.array(
        [private_item_counts(matrix, _spec(offset + s))[0][TARGET].sum() for s in range(runs)]
    )


@pytest.mark.parametrize(("scale", "private"), [(1.0, True), (0.1, False)])
def test_dp_most_popular_counts_are_indistinguishable_without_one_user(scale, private):
    with _noise_scale_for_testing(scale):
        with_user = _count_statistic(D, 3000, 0)
        without_user = _count_statistic(D_PRIME, 3000, 10**6)
    # The user shifts the statistic by exactly c (a sanity check on the simulation).
    assert with_user.mean() - without_user.mean() == pytest.approx(
        BOUND, abs=6 * with_user.std() / math.sqrt(3000)
    )
    violation = worst_violation(with_user, without_user, EPSILON, DELTA)
    assert bool(violation <= 0) is private, violation


# -------------------------------------------------------------------- DP-EASE, end to end
def _ease_outputs(data: Interactions, runs: int, offset: int) -> np.ndarray:
    cold, completion = [], []
    rest = Query.histories([np.delete(TARGET, i) for i in range(BOUND)])
    for s in range(runs):
        model = EASE(regularization=5.0, dtype="float64").fit(
            data, FitOptions(threads=1, privacy=_spec(offset + s))
        )
        cold.append(model.score(Query.histories([[]]), items=TARGET)[0].sum())
        completion.append(np.trace(model.score(rest, items=TARGET)))
    return np.array([cold, completion])


@pytest.mark.parametrize(("scale", "private"), [(1.0, True), (0.1, False)])
def test_dp_ease_is_indistinguishable_without_one_user(scale, private):
    with _noise_scale_for_testing(scale):
        with_user = _ease_outputs(D, 400, 0)
        without_user = _ease_outputs(D_PRIME, 400, 10**6)
    violations = [
        worst_violation(a, b, EPSILON, DELTA / 2)
        for a, b in zip(with_user, without_user, strict=True)
    ]
    if private:
        assert max(violations) <= 0, violations
    else:
        assert max(violations) > 0, violations
