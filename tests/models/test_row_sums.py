"""Scores of a few histories by summing dense or sparse rows, against scipy's sparse products
(the path they replace) as the oracle: the same bits."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from privrank.models import EASE, EASESparse, ItemKNN, Query
from privrank.models import itemknn as itemknn_module
from privrank.models._row_sums import history_row_sums, sparse_history_row_sums
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_row_sums_are_the_sparse_products_bits(dtype):
    rng = np.random.default_rng(5)
    dense = rng.normal(size=(300, 500)).astype(dtype)
    dense[rng.random(dense.shape) < 0.8] = 0
    dense[11] = 0  # an empty row
    weights = sp.csr_matrix(dense)
    query = _histories(300, 9, seed=6)
    query = Query.histories([*[query.history(i) for i in range(9)], [11], []])
    got = sparse_history_row_sums(query, weights)
    assert got.dtype == dtype and got.shape == (11, 500)
    oracle = (query.to_csr(300, dtype=dtype) @ weights).toarray()
    np.testing.assert_array_equal(got, oracle)
    np.testing.assert_array_equal(got[-2:], 0)
    shuffled = weights.copy()  # entries of a row in any order: the same sums per column
    for row in range(300):
        start, stop = shuffled.indptr[row], shuffled.indptr[row + 1]
        order = start + rng.permutation(stop - start)
        shuffled.indices[start:stop] = shuffled.indices[order]
        shuffled.data[start:stop] = shuffled.data[order]
    shuffled.has_sorted_indices = False
    np.testing.assert_array_equal(sparse_history_row_sums(query, shuffled), oracle)


def test_sparse_item_item_models_score_a_few_histories_with_the_batched_products_bits(
    monkeypatch,
):
    monkeypatch.setattr(itemknn_module, "_DENSE_BYTES", 0)  # as for a large catalogue
    data = synthetic_interactions(n_users=300, n_items=400, per_user=40, seed=7)
    query = _histories(400, 20, seed=8)  # more than FEW_ROWS: the batch takes scipy's path
    for model in (
        EASESparse(regularization=20.0, neighbors=30).fit(data),
        EASESparse(regularization=20.0, neighbors=30, dtype="float64").fit(data),
        ItemKNN(neighbors=30, shrinkage=2.0).fit(data),
    ):
        batched = model.score(query)
        for position in (0, 3, 19):
            single = model.score(query.take(np.array([position])))[0]
            np.testing.assert_array_equal(single, batched[position])
