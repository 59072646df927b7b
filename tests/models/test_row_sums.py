"""Scores of a few histories by summing dense rows, against scipy's sparse products (the path
they replace) as the oracle: the same bits."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.models import EASE, Query
from privrank.models._row_sums import history_row_sums
from privrank.testing import synthetic_interactions


def _histories(n_items: int, n: int, seed: int) -> Query:
    rng = np.random.default_rng(seed)
    histories = [rng.integers(0, n_items, size=rng.integers(1, 250)) for _ in range(n)]
    histories[0] = np.array([7, 7, 7, 3])  # repeats count once
    return Query.histories(histories)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_sums_are_the_sparse_products_bits(dtype):
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(300, 300)).astype(dtype)
    weights[rng.random(weights.shape) < 0.5] = 0
    query = _histories(300, 9, seed=2)
    got = history_row_sums(query, weights)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, query.to_csr(300, dtype=dtype) @ weights)


def test_ease_scores_of_a_few_histories_are_the_batched_products_bits():
    data = synthetic_interactions(n_users=300, n_items=400, per_user=40, seed=3)
    model = EASE(regularization=50.0).fit(data)
    query = _histories(400, 12, seed=4)
    oracle = np.asarray(
        query.to_csr(400, dtype=model.weights_.dtype) @ model.weights_, dtype=np.float32
    )
    np.testing.assert_array_equal(model.score(query), oracle)
    np.testing.assert_array_equal(model.score(query.take(np.array([3])))[0], oracle[3])
