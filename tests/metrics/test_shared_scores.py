"""One score vector for every user (a non-personalised model): the fast top-k path against the
generic path (a broadcast score matrix, masked and ranked) and a row-by-row sort."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.errors import ConfigError, DataError
from privrank.metrics import EvaluationConfig, evaluate
from privrank.metrics.evaluate import SharedScores
from privrank.metrics.shared import shared_order, shared_top_k
from privrank.metrics.topk import mask_items, ragged_rows, top_k

from ._oracle import reference_top_k
from .conftest import make_split, tied_vector


def _random_csr(n_rows: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows excluding 0 … n_items items (some rows exclude every item)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, n_items + 1, n_rows)
    lengths[::7] = n_items
    lengths[1::7] = 0
    indices = np.concatenate([np.sort(rng.permutation(n_items)[:m]) for m in lengths])
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), indices.astype(np.int64)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 12, 40])
def test_shared_top_k_equals_masking_a_broadcast_matrix(seed: int, k: int) -> None:
    n_rows, n_items = 60, 25
    vector = tied_vector(n_items, seed)
    indptr, indices = _random_csr(n_rows, n_items, seed)
    rows = np.random.default_rng(seed).permutation(n_rows)[:45]  # any order, a subset
    fast = shared_top_k(shared_order(vector), k, indptr, indices, rows)
    matrix = np.tile(vector, (len(rows), 1))
    position, items, _ = ragged_rows(indptr, indices, rows)
    mask_items(matrix, position, items)
    generic = top_k(matrix, k)
    np.testing.assert_array_equal(fast.items, generic.items)
    np.testing.assert_array_equal(fast.scores, generic.scores)
    np.testing.assert_array_equal(fast.items, reference_top_k(matrix, k))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [1, 5, 20])
def test_shared_top_k_on_consecutive_rows_with_histories_over_the_head(seed: int, k: int) -> None:
    """Consecutive rows (the evaluator's batches: the one-slice path of ``ragged_rows``), a
    catalogue larger than ``k`` with ties, rows that exclude the whole head of the order, rows
    untouched by their exclusions (the head's fast copy) and rows excluding far down only."""
    rng = np.random.default_rng(100 + seed)
    n_rows, n_items = 70, 90
    vector = tied_vector(n_items, seed, levels=6)
    order = shared_order(vector)
    lists = []
    for row in range(n_rows):
        kind = row % 4
        if kind == 0:  # the top k + a few of the global order, and some random items
            chosen = np.concatenate([order.items[: k + row % 3], rng.permutation(n_items)[:5]])
        elif kind == 1:  # nothing near the head
            chosen = order.items[k + 10 :][rng.random(max(len(order.items) - k - 10, 0)) < 0.3]
        elif kind == 2:  # random, up to the whole catalogue
            chosen = rng.permutation(n_items)[: rng.integers(0, n_items + 1)]
        else:
            chosen = np.array([], dtype=np.int64)
        lists.append(np.unique(chosen.astype(np.int64)))
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    indices = np.concatenate(lists).astype(np.int64)
    start = int(rng.integers(0, 10))
    rows = np.arange(start, n_rows - int(rng.integers(0, 10)), dtype=np.int64)
    fast = shared_top_k(order, k, indptr, indices, rows)
    matrix = np.tile(vector, (len(rows), 1))
    for i, row in enumerate(rows):
        matrix[i, lists[row]] = -np.inf  # the oracle masks row by row, no ragged_rows
    np.testing.assert_array_equal(fast.items, reference_top_k(matrix, k))
    generic = top_k(matrix, k)
    np.testing.assert_array_equal(fast.items, generic.items)
    np.testing.assert_array_equal(fast.scores, generic.scores)
    assert fast.items.dtype == np.int64 and fast.scores.dtype == vector.dtype


def test_ragged_rows_of_consecutive_rows_equals_the_gather() -> None:
    indptr, indices = _random_csr(40, 12, 3)
    data = np.arange(len(indices), dtype=np.float64)
    for rows in (np.arange(40), np.arange(5, 17), np.arange(9, 10), np.arange(0)):
        position, items, values = ragged_rows(indptr, indices, rows, data)
        expected = [
            (i, indices[e], data[e])
            for i, r in enumerate(rows)
            for e in range(indptr[r], indptr[r + 1])
        ]
        assert position.tolist() == [e[0] for e in expected]
        assert items.tolist() == [e[1] for e in expected]
        assert values is not None and values.tolist() == [e[2] for e in expected]


@pytest.mark.parametrize("exclude_train", [True, False])
@pytest.mark.parametrize("graded", [False, True])
def test_evaluate_shared_scores_equals_the_generic_path(exclude_train: bool, graded: bool) -> None:
    train, test = make_split(seed=2)
    vector = tied_vector(train.n_items, seed=5)
    config = EvaluationConfig(
        cutoffs=(1, 5, 10, 100),  # 100 > 90 items: padded lists
        graded=graded,
        exclude_train=exclude_train,
        batch_size=13,
        keep_recommendations=True,
    )
    fast = evaluate(SharedScores(vector), train, test, config)
    generic = evaluate(
        lambda users: np.broadcast_to(vector, (len(users), len(vector))), train, test, config
    )
    np.testing.assert_array_equal(fast.users, generic.users)
    np.testing.assert_array_equal(fast.recommendations, generic.recommendations)
    assert fast.per_user.keys() == generic.per_user.keys()
    for name, values in generic.per_user.items():
        np.testing.assert_array_equal(fast.per_user[name], values, err_msg=name)
    assert fast.aggregate == generic.aggregate
    assert fast.counts == generic.counts


def test_shared_scores_errors() -> None:
    train, test = make_split()
    with pytest.raises(ConfigError, match=r"shape \(3,\), expected \(90,\)"):
        evaluate(SharedScores(np.zeros(3)), train, test)
    nan = np.zeros(train.n_items, dtype=np.float32)
    nan[4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        evaluate(SharedScores(nan), train, test)
    with pytest.raises(ConfigError, match="1-D"):
        shared_order(np.zeros((2, 2)))
