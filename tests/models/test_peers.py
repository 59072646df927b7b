"""implicit's models behind the contract: the wrapper passes our data and settings through."""

from __future__ import annotations

import numpy as np

from privrank.models import FitOptions, ImplicitALS, ImplicitBPR, Query
from privrank.testing import synthetic_interactions


def test_implicit_als_fold_in_is_the_hu_koren_volinsky_solve():
    """Fold-in = argmin_w sum_i c_i (p_i - w.y_i)^2 + lam |w|^2 over all items, with p_i = 1 and
    c_i = alpha on the history and p_i = 0, c_i = 1 elsewhere (solved here in float64)."""
    data = synthetic_interactions(n_users=40, n_items=25, seed=1)
    model = ImplicitALS(factors=6, regularization=0.2, alpha=4.0, iterations=5).fit(data)
    items = model.item_factors_.astype(np.float64)
    history = np.array([2, 3, 17])
    confidence = np.ones(25)
    confidence[history] = 4.0
    preference = np.zeros(25)
    preference[history] = 1.0
    system = items.T @ (confidence[:, None] * items) + 0.2 * np.eye(6)
    expected = np.linalg.solve(system, items.T @ (confidence * preference))
    scores = model.score(Query.histories([history]))[0]
    np.testing.assert_allclose(scores, items @ expected, rtol=1e-3, atol=1e-4)


def test_seed_and_threads_reach_implicit():
    data = synthetic_interactions(n_users=40, n_items=25, seed=1)
    for cls in (ImplicitALS, ImplicitBPR):
        a = cls(factors=4, iterations=3).fit(data, FitOptions(seed=5, threads=1))
        b = cls(factors=4, iterations=3).fit(data, FitOptions(seed=5, threads=1))
        np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    bpr = ImplicitBPR(factors=4, iterations=3).fit(data)
    assert bpr.item_factors_.shape == (25, 5)  # implicit's item-bias column
    assert np.all(bpr.user_factors_[:, -1] == 1)
