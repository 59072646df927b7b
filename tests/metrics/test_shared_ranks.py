"""Ranking metrics of a shared score vector from each relevant item's rank (no top lists):
``shared_ranks`` against ranking each masked row in full, ``RankedRelevance.from_ranks``
against matching lists (``from_lists`` and the former implementation), and ``evaluate``'s
shared path against the generic path (a broadcast score matrix, masked and ranked); the
split's pair sets built once and reused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrank.data import Interactions
from privrank.errors import ConfigError, DataError
from privrank.metrics import EvaluationConfig, evaluate, prepare_pairs
from privrank.metrics import shared as shared_module
from privrank.metrics.evaluate import SharedScores, ranking_metric
from privrank.metrics.ranking import RankedRelevance, compute
from privrank.metrics.shared import shared_order, shared_ranks

from ._reference_ranking import reference_from_lists, reference_metric
from .conftest import make_split, tied_vector

PATHS = {"compare": 10**9, "sort": 0}  # _PAIR_FACTOR forcing each of shared_ranks' two paths


def _full_ranking(vector: np.ndarray, excluded: set[int]) -> list[int]:
    """Every item a row ranks, best first: score descending, then item code; skipping -inf
    and the row's excluded items (the oracle, one row at a time)."""
    return sorted(
        (j for j in range(len(vector)) if vector[j] != -math.inf and j not in excluded),
        key=lambda j: (-float(vector[j]), j),
    )


def _random_case(seed: int, n_rows: int = 40, n_items: int = 30, per_row: int = 6):
    """Exclusions (CSR, 0 … all items per row) and ascending queries (several per row, some
    excluded, some at -inf, some rows without queries)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, n_items + 1, n_rows)
    lengths[::5] = 0
    lengths[1::9] = n_items
    indices = np.concatenate([np.sort(rng.permutation(n_items)[:m]) for m in lengths])
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows, items = [], []
    for row in range(n_rows):
        if row % 7 == 3:
            continue
        chosen = rng.permutation(n_items)[: rng.integers(1, per_row + 1)]
        rows += [row] * len(chosen)
        items += chosen.tolist()
    return indptr, indices.astype(np.int64), np.array(rows, np.int64), np.array(items, np.int64)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("seed", range(8))
def test_shared_ranks_equal_the_rank_in_each_masked_row(
    seed: int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_module, "_PAIR_FACTOR", PATHS[path])
    n_items = 30
    vector = tied_vector(n_items, seed)
    indptr, indices, rows, items = _random_case(seed, n_items=n_items)
    ranks = shared_ranks(shared_order(vector), indptr, indices, rows, items)
    expected = []
    for row, item in zip(rows, items, strict=True):
        ranking = _full_ranking(vector, set(indices[indptr[row] : indptr[row + 1]].tolist()))
        expected.append(ranking.index(item) if item in ranking else -1)
    assert ranks.tolist() == expected
    assert (ranks == -1).any() and (ranks > 0).any()  # the case covers both outcomes


def test_shared_ranks_without_exclusions_or_queries() -> None:
    vector = np.array([1.0, 3.0, -np.inf, 3.0, 2.0], dtype=np.float32)
    order = shared_order(vector)
    none = np.zeros(4, dtype=np.int64)
    ranks = shared_ranks(order, none, np.zeros(0, np.int64), np.array([0, 1, 1, 2]), [2, 3, 1, 0])
    assert ranks.tolist() == [-1, 1, 0, 3]
    assert shared_ranks(order, none, np.zeros(0, np.int64), [], []).tolist() == []
    with pytest.raises(DataError, match="sorted"):
        shared_ranks(order, none, np.zeros(0, np.int64), [1, 0], [0, 0])


def _lists_and_ranks(seed: int, depth: int, graded: bool):
    """Top-``depth`` lists of a masked shared vector, and the same judgements as ranks."""
    rng = np.random.default_rng(seed)
    n_items = 30
    vector = tied_vector(n_items, seed)
    indptr, indices, rows, items = _random_case(seed, n_items=n_items)
    users = np.unique(rows)
    position = np.searchsorted(users, rows)
    top = np.full((len(users), depth), -1, dtype=np.int64)
    for slot, row in enumerate(users):
        ranking = _full_ranking(vector, set(indices[indptr[row] : indptr[row + 1]].tolist()))
        top[slot, : min(depth, len(ranking))] = ranking[:depth]
    ranks = shared_ranks(shared_order(vector), indptr, indices, rows, items)
    grades = rng.integers(1, 4, len(items)).astype(np.float64) if graded else None
    return top, position, items, ranks, grades


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("depth", [1, 4, 12, 40])
@pytest.mark.parametrize("seed", range(6))
def test_from_ranks_equals_matching_the_lists(seed: int, depth: int, graded: bool) -> None:
    top, position, items, ranks, grades = _lists_and_ranks(seed, depth, graded)
    fast = RankedRelevance.from_ranks(depth, position, ranks, grades, n_users=len(top))
    lists = RankedRelevance.from_lists(top, position, items, grades)
    oracle = reference_from_lists(top, position, items, grades)
    assert fast.depth == depth and fast.n_users == len(top)
    np.testing.assert_array_equal(fast.n_relevant, oracle.n_relevant)
    gains = ["linear", "exponential", "binary"] if graded else ["binary"]
    for k in sorted({1, min(3, depth), depth}):
        for gain in gains:
            for name in ("recall", "precision", "ndcg", "mrr", "hit_rate", "map"):
                for denominator in ("relevant", "min_k_relevant"):
                    args = {"gain": gain, "recall_denominator": denominator}
                    args["map_denominator"] = denominator
                    value = compute(name, fast, k, **args)
                    np.testing.assert_array_equal(value, compute(name, lists, k, **args))
                    np.testing.assert_array_equal(
                        value, reference_metric(name, oracle, k, **args), err_msg=name
                    )
    # The dense matrices, built on access, are the matched lists'.
    np.testing.assert_array_equal(fast.grades, oracle.grades)
    np.testing.assert_array_equal(fast.ideal, oracle.ideal)


def test_from_ranks_refuses_bad_judgements() -> None:
    with pytest.raises(DataError, match="share a rank"):
        RankedRelevance.from_ranks(5, [0, 0], [2, 2], n_users=1)
    with pytest.raises(DataError, match="> 0"):
        RankedRelevance.from_ranks(5, [0], [1], [0.0], n_users=1)
    with pytest.raises(DataError, match="sorted"):
        RankedRelevance.from_ranks(5, [1, 0], [1, 2], n_users=2)
    with pytest.raises(DataError, match="at least one relevant"):
        RankedRelevance.from_ranks(5, [0], [1], n_users=2)
    with pytest.raises(DataError, match="past the last user"):
        RankedRelevance.from_ranks(5, [0, 3], [1, 1], n_users=2)
    with pytest.raises(ConfigError, match="depth"):
        RankedRelevance.from_ranks(0, [0], [1], n_users=1)
    # Two unranked judgements of one user (-1) or two beyond the list do not clash.
    relevance = RankedRelevance.from_ranks(2, [0, 0, 0], [-1, -1, 7], n_users=1)
    assert compute("ndcg", relevance, 2).tolist() == [0.0]


def _leave_one_out(seed: int) -> tuple[Interactions, Interactions]:
    """Each user's last row is the test item (one judgement per user, graded 1-5), some test
    items are training items too and some users have no training rows."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 80, 50
    lengths = rng.integers(1, 25, n_users)
    users = np.repeat(np.arange(n_users), lengths)
    items = rng.integers(0, n_items, len(users))
    last = np.cumsum(lengths) - 1
    in_test = np.zeros(len(users), dtype=bool)
    in_test[last] = True
    values = rng.integers(1, 6, len(users)).astype(np.float32)
    data = Interactions.from_codes(users, items, n_users=n_users, n_items=n_items, values=values)
    return data.take(~in_test), data.take(in_test)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("split", ["holdout", "leave-one-out"])
@pytest.mark.parametrize("exclude_train", [True, False])
@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_evaluate_shared_ranking_metrics_equal_the_generic_path(
    seed: int,
    graded: bool,
    exclude_train: bool,
    split: str,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No beyond-accuracy metrics and no kept lists: the shared path builds no top lists."""
    monkeypatch.setattr(shared_module, "_PAIR_FACTOR", PATHS[path])
    if split == "holdout":
        train, test = make_split(seed=seed)
    else:
        train, test = _leave_one_out(seed)
    vector = tied_vector(train.n_items, seed=seed + 11)
    config = EvaluationConfig(
        cutoffs=(1, 5, 10, 100),  # 100 > the catalogue: padded lists
        graded=graded,
        exclude_train=exclude_train,
        beyond_accuracy=False,
        batch_size=7,
    )
    fast = evaluate(SharedScores(vector), train, test, config)
    generic = evaluate(
        lambda users: np.broadcast_to(vector, (len(users), len(vector))), train, test, config
    )
    np.testing.assert_array_equal(fast.users, generic.users)
    assert fast.per_user.keys() == generic.per_user.keys()
    for name, values in generic.per_user.items():
        np.testing.assert_array_equal(fast.per_user[name], values, err_msg=name)
    assert fast.counts == generic.counts
    assert fast.recommendations is None


def test_pairs_built_once_give_the_same_result_and_must_match_the_split() -> None:
    train, test = make_split(seed=4)
    config = EvaluationConfig(cutoffs=(5, 10), beyond_accuracy=False)
    vector = tied_vector(train.n_items, seed=3)
    pairs = prepare_pairs(train, test)
    reused = evaluate(SharedScores(vector), train, test, config, pairs=pairs)
    fresh = evaluate(SharedScores(vector), train, test, config)
    for name, values in fresh.per_user.items():
        np.testing.assert_array_equal(reused.per_user[name], values, err_msg=name)
    assert reused.counts == fresh.counts
    scorer = lambda users: np.broadcast_to(vector, (len(users), len(vector)))  # noqa: E731
    generic = evaluate(scorer, train, test, config, pairs=pairs)
    np.testing.assert_array_equal(generic.per_user["ndcg@10"], fresh.per_user["ndcg@10"])
    other_train, other_test = make_split(seed=5)
    with pytest.raises(ConfigError, match="another train/test split"):
        evaluate(SharedScores(vector), other_train, other_test, config, pairs=pairs)
    with pytest.raises(ConfigError, match="graded=False"):
        graded = config.model_copy(update={"graded": True})
        evaluate(SharedScores(vector), train, test, graded, pairs=pairs)


def test_ranking_metric_reads_a_from_ranks_relevance() -> None:
    """One user, judged items at ranks 0 and 2 of a 3-long list and one beyond it."""
    relevance = RankedRelevance.from_ranks(3, [0, 0, 0], [2, 0, 9], n_users=1)
    config = EvaluationConfig(cutoffs=(3,))
    ndcg = ranking_metric("ndcg", relevance, 3, config)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg[0] == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    assert ranking_metric("recall", relevance, 3, config)[0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_pair_set_equals_a_dictionary_of_pairs(seed: int, graded: bool) -> None:
    """Distinct pairs per user, items ascending, the largest value as grade (duplicates many:
    300 rows over 12 users x 9 items); users without pairs have empty rows."""
    from privrank.metrics._prepare import pair_set

    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 12, 300), rng.integers(0, 9, 300)
    values = rng.integers(1, 6, 300).astype(np.float32)
    users[users == 5] = 6  # user 5 has no pairs
    data = Interactions.from_codes(users, items, n_users=12, n_items=9, values=values)
    best: dict[tuple[int, int], float] = {}
    for u, i, v in zip(users.tolist(), items.tolist(), values.tolist(), strict=True):
        best[(u, i)] = max(best.get((u, i), 0.0), v)
    pairs = pair_set(data, graded=graded)
    for user in range(12):
        row = slice(pairs.indptr[user], pairs.indptr[user + 1])
        expected = sorted(i for (u, i) in best if u == user)
        assert pairs.indices[row].tolist() == expected
        if graded:
            assert pairs.grades is not None
            assert pairs.grades[row].tolist() == [best[(user, i)] for i in expected]
    assert pairs.grades is None or graded
    assert pairs.indptr[5] == pairs.indptr[6]
