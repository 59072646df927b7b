"""The beyond-accuracy metrics' fast paths against the former implementations
(``_reference_beyond``) and the dense lists: bit-identical values.

* :func:`beyond.list_means` (one list position at a time over all rows) equals the running sums
  over a dense ``[rows, k]`` matrix;
* :func:`beyond.exposure_by_cutoff` equals counting each cutoff's lists row by row;
* :func:`beyond.gini` on integer counts (exact integer formula over the non-zero counts)
  equals the float formula over every sorted count;
* the head-plus-changed-rows lists of a shared order (:func:`shared.shared_lists`) give the
  per-row means and exposure of the dense lists (:func:`shared.shared_top_k`, itself checked
  against masking a broadcast score matrix), and ``evaluate`` of :class:`SharedScores` with the
  beyond-accuracy metrics equals the generic path.
"""

from __future__ import annotations

import numpy as np
import pytest

from privrank.data.interactions import Interactions
from privrank.metrics import EvaluationConfig, beyond, evaluate
from privrank.metrics.evaluate import SharedScores
from privrank.metrics.shared import shared_lists, shared_order, shared_ranks, shared_top_k

from ._oracle import reference_top_k
from ._reference_beyond import reference_exposure, reference_gini, reference_list_means
from .conftest import tied_vector


def _random_lists(rng: np.random.Generator, n_rows: int, width: int, n_items: int) -> np.ndarray:
    """Rows of distinct items with ``-1`` padding at the tail, a few padded anywhere, some empty."""
    top = np.full((n_rows, width), -1, dtype=np.int64)
    for row in range(n_rows):
        length = int(rng.integers(0, width + 1)) if row % 3 else width
        top[row, :length] = rng.permutation(n_items)[: min(length, n_items)]
    holes = rng.random(top.shape) < 0.05
    top[holes] = -1
    return top


def _per_item(rng: np.random.Generator, n_items: int, kind: int) -> np.ndarray:
    if kind == 0:  # popularity counts
        return rng.integers(0, 1000, n_items).astype(np.int64)
    if kind == 1:  # self-information, with -0.0 (an item every user touched)
        values = -np.log2(np.maximum(rng.integers(0, 50, n_items), 1) / 50)
        values[rng.random(n_items) < 0.2] = -0.0
        return values
    # wide magnitudes: a different order of additions would change the last bits
    return rng.standard_normal(n_items) * 10.0 ** rng.integers(-8, 9, n_items)


@pytest.mark.parametrize("seed", range(30))
def test_list_means_equal_the_running_sums(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows, width, n_items = int(rng.integers(0, 60)), int(rng.integers(1, 30)), 40
    top = _random_lists(rng, n_rows, width, n_items)
    if seed % 5 == 0:
        top[:, -1] = np.maximum(top[:, -1], 0)  # no padding in the last column
    if seed % 7 == 0:
        top = np.maximum(top, 0)  # no padding at all
    per_item = _per_item(rng, n_items, seed % 3)
    cutoffs = tuple(rng.choice(np.arange(1, width + 1), size=min(4, width), replace=False))
    before = top.copy()
    fast = beyond.list_means(top, per_item, cutoffs)
    expected = reference_list_means(top, per_item, cutoffs)
    assert fast.keys() == expected.keys()
    for k in cutoffs:
        assert fast[k].dtype == np.float64 and fast[k].shape == (n_rows,)
        np.testing.assert_array_equal(fast[k], expected[k], err_msg=f"k={k}")
        # the same bits, -0.0 included
        assert fast[k].tobytes() == expected[k].tobytes()
    np.testing.assert_array_equal(top, before)  # the lists are not written to


def test_list_means_of_one_row_view_leaves_it_untouched() -> None:
    """A one-row list's transpose is contiguous already: padding must not be written back."""
    head = np.array([3, 1, -1, -1])
    means = beyond.list_means(head[None, :], np.arange(5.0), (1, 4))
    assert head.tolist() == [3, 1, -1, -1]
    assert means[1].tolist() == [3.0] and means[4].tolist() == [2.0]


@pytest.mark.parametrize("seed", range(20))
def test_exposure_by_cutoff_counts_each_cutoff(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows, width, n_items = int(rng.integers(0, 50)), int(rng.integers(1, 25)), 30
    top = _random_lists(rng, n_rows, width, n_items)
    cutoffs = tuple(rng.choice(np.arange(1, width + 1), size=min(3, width), replace=False))
    counts = beyond.exposure_by_cutoff(top, cutoffs, n_items)
    for k in cutoffs:
        assert counts[k].dtype == np.int64
        np.testing.assert_array_equal(counts[k], reference_exposure(top, k, n_items))
        np.testing.assert_array_equal(counts[k], beyond.exposure_counts(top, k, n_items))


@pytest.mark.parametrize("seed", range(40))
def test_integer_gini_equals_the_float_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    kind = seed % 4
    if kind == 0:  # mostly zeros, a few large counts (a popularity recommender)
        counts = np.zeros(n, dtype=np.int64)
        counts[rng.integers(0, n, 5)] = rng.integers(1, 10**6, 5)
    elif kind == 1:  # many ties
        counts = rng.integers(0, 4, n).astype(np.int64)
    elif kind == 2:  # spread out
        counts = rng.integers(0, 10**9, n).astype(np.int64)
    else:  # all equal
        counts = np.full(n, int(rng.integers(0, 7)), dtype=np.int64)
    assert beyond.gini(counts) == reference_gini(counts)
    assert beyond.gini(counts.astype(np.int32)) == reference_gini(counts)


def test_gini_edge_cases_and_the_float_fallback() -> None:
    assert beyond.gini(np.zeros(0, dtype=np.int64)) == 0.0
    assert beyond.gini(np.zeros(5, dtype=np.int64)) == 0.0
    assert beyond.gini(np.array([0, 0, 0, 8])) == 1 - 1 / 4
    # I * sum(r) >= 2**53: the float formula (same as the reference by construction)
    huge = np.array([0, 1, 2**52, 2**51], dtype=np.int64)
    assert beyond.gini(huge) == reference_gini(huge)
    # negative counts (not exposure) keep the float formula
    odd = np.array([-3, 0, 5, 2], dtype=np.int64)
    assert beyond.gini(odd) == reference_gini(odd)
    floats = np.array([0.5, 0.0, 2.0])
    assert beyond.gini(floats) == reference_gini(floats)


def _histories(
    rng: np.random.Generator, n_rows: int, n_items: int, head: np.ndarray, k: int
) -> list[np.ndarray]:
    """Empty histories, histories covering the whole head, the whole catalogue, only the tail,
    and random ones."""
    lists = []
    for row in range(n_rows):
        kind = row % 6
        if kind == 0:
            chosen = np.array([], dtype=np.int64)
        elif kind == 1:  # the head and then some
            chosen = np.concatenate([head[: k + row % 4], rng.permutation(n_items)[:3]])
        elif kind == 2:  # everything
            chosen = np.arange(n_items)
        elif kind == 3:  # nothing near the head
            tail = head[k + 5 :]
            chosen = tail[rng.random(len(tail)) < 0.4]
        else:
            chosen = rng.permutation(n_items)[: int(rng.integers(0, n_items))]
        lists.append(np.unique(chosen.astype(np.int64)))
    return lists


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [1, 4, 15, 70])
def test_shared_lists_measure_like_the_dense_lists(seed: int, k: int) -> None:
    rng = np.random.default_rng(300 + seed)
    n_rows, n_items = 80, 60
    vector = tied_vector(n_items, seed, levels=5)  # ties, -0.0, some -inf items
    order = shared_order(vector)
    lists = _histories(rng, n_rows, n_items, order.items, k)
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    indices = np.concatenate(lists).astype(np.int64)
    rows = rng.permutation(n_rows)[: int(rng.integers(1, n_rows))]
    if seed % 2:
        rows = np.sort(rows)
    compact = shared_lists(order, k, indptr, indices, rows)
    dense = shared_top_k(order, k, indptr, indices, rows).items
    matrix = np.tile(vector, (len(rows), 1))
    for i, row in enumerate(rows):
        matrix[i, lists[row]] = -np.inf
    np.testing.assert_array_equal(dense, reference_top_k(matrix, k))
    # the changed rows are exactly those whose list is not the head
    differs = np.flatnonzero((dense != compact.head_items).any(axis=1))
    np.testing.assert_array_equal(compact.changed, differs)
    assert compact.n_same == len(rows) - len(differs)
    # each changed row's list is its pattern's; rows with one exclusion pattern share a list
    np.testing.assert_array_equal(compact.items[compact.pattern], dense[compact.changed])
    assert len(compact.items) <= len(compact.changed)
    np.testing.assert_array_equal(compact.multiplicity(), np.bincount(compact.pattern))
    # ranks read from the lists: shared_ranks' within the depth, -1 elsewhere, and each
    # query's index in its row's dense list
    which = np.sort(rng.integers(0, len(rows), 200))
    asked = rng.integers(0, n_items, 200)
    by_order = np.argsort(rows[which], kind="stable")
    full = np.empty(200, dtype=np.int64)
    full[by_order] = shared_ranks(order, indptr, indices, rows[which][by_order], asked[by_order])
    from_lists = compact.ranks(which, asked)
    np.testing.assert_array_equal(from_lists, np.where(full < k, full, -1))
    for j in range(200):
        hits = np.flatnonzero(dense[which[j]] == asked[j])
        assert from_lists[j] == (hits[0] if len(hits) else -1)
    cutoffs = tuple(sorted({1, max(1, k // 2), k}))
    popularity = rng.integers(0, 100, n_items).astype(np.int64)
    information = beyond.self_information(popularity, 100)
    for per_item in (popularity, information):
        fast = beyond.shared_list_means(compact, per_item, cutoffs)
        expected = reference_list_means(dense, per_item, cutoffs)
        for c in cutoffs:
            assert fast[c].tobytes() == expected[c].tobytes(), c
    exposure = beyond.shared_exposure(compact, cutoffs, n_items)
    for c in cutoffs:
        np.testing.assert_array_equal(exposure[c], reference_exposure(dense, c, n_items))
        assert exposure[c].dtype == np.int64


def _loo_split(
    seed: int, n_users: int = 90, n_items: int = 70
) -> tuple[Interactions, Interactions]:
    """Training histories of every kind (empty, over the popular head, the whole catalogue) and
    one test item per user, sometimes a training item too."""
    rng = np.random.default_rng(seed)
    popular = rng.permutation(n_items)
    users, items = [], []
    for user in range(n_users):
        kind = user % 5
        if kind == 0:
            chosen = np.array([], dtype=np.int64)
        elif kind == 1:
            chosen = popular[: int(rng.integers(1, 30))]
        elif kind == 2 and user % 10 == 2:
            chosen = np.arange(n_items)
        else:
            chosen = np.unique(rng.choice(popular[:40], size=int(rng.integers(1, 15))))
        users += [user] * len(chosen)
        items += chosen.tolist()
    # popularity skewed towards `popular`'s first items, with ties
    extra = rng.integers(0, n_users, 400)
    extra_items = popular[np.minimum(rng.geometric(0.15, 400), n_items - 1)]
    train = Interactions.from_codes(
        np.concatenate([users, extra]).astype(np.int64),
        np.concatenate([items, extra_items]).astype(np.int64),
        n_users=n_users,
        n_items=n_items,
    )  # repeated pairs count once (the evaluator's pair sets)
    test = Interactions.from_codes(
        np.arange(n_users, dtype=np.int64),
        rng.integers(0, n_items, n_users).astype(np.int64),
        n_users=n_users,
        n_items=n_items,
    )
    return train, test


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("keep", [False, True])
def test_evaluate_shared_beyond_metrics_equal_the_generic_path(seed: int, keep: bool) -> None:
    train, test = _loo_split(seed)
    counts = np.bincount(train.items(), minlength=train.n_items).astype(np.float64)
    if seed % 3 == 0:
        counts = np.floor(counts / 3)  # more ties
    if seed % 4 == 1:
        counts[:5] = -np.inf  # items never recommended: short orders, padded lists
    config = EvaluationConfig(
        cutoffs=(1, 5, 20, 80),  # 80 > 70 items: padded lists
        batch_size=7 + seed,
        keep_recommendations=keep,
    )
    fast = evaluate(SharedScores(counts), train, test, config)
    generic = evaluate(
        lambda users: np.broadcast_to(counts, (len(users), len(counts))), train, test, config
    )
    assert fast.per_user.keys() == generic.per_user.keys()
    for name, values in generic.per_user.items():
        assert fast.per_user[name].tobytes() == values.tobytes(), name
    assert fast.aggregate == generic.aggregate
    assert set(fast.aggregate) == {f"{m}@{k}" for m in ("coverage", "gini") for k in (1, 5, 20, 80)}
    if keep:
        np.testing.assert_array_equal(fast.recommendations, generic.recommendations)
    else:
        assert fast.recommendations is None


def test_rows_with_one_exclusion_pattern_share_a_list() -> None:
    """Rows 0, 2 and 4 leave out the head's second item; rows 1 and 5 its first two (row 5 also
    a tail item, which changes nothing); row 3 only tail items (its list is the head); row 6
    more head items than 62 bits of key hold (a pattern of its own, never shared)."""
    vector = -np.arange(100, dtype=np.float64)  # the order is 0, 1, 2, ...
    order = shared_order(vector)
    histories = [[1], [0, 1], [1], [90], [1], [0, 1, 95], list(range(30)), list(range(30))]
    indptr = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
    indices = np.concatenate([np.array(h) for h in histories]).astype(np.int64)
    lists = shared_lists(order, 40, indptr, indices, np.arange(len(histories)))
    assert lists.changed.tolist() == [0, 1, 2, 4, 5, 6, 7]
    assert lists.pattern.tolist() == [0, 1, 0, 0, 1, 2, 3]  # 6 and 7: over 62 bits, unshared
    assert lists.items[0].tolist() == [0, *range(2, 41)]
    assert lists.items[1].tolist() == list(range(2, 42))
    assert lists.items[2].tolist() == list(range(30, 70)) == lists.items[3].tolist()
    assert lists.multiplicity().tolist() == [3, 2, 1, 1]
