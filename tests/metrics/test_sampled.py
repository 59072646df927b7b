"""Sampled-negative metrics: opt-in, labelled, seeded, and correct on a brute-force check."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.metrics import SampledConfig, evaluate_sampled
from privrank.metrics.sampled import _candidates

from ._oracle import reference_metrics


def _scorer(n_users: int, n_items: int):
    rng = np.random.default_rng(5)
    users = rng.standard_normal((n_users, 4))
    items = rng.standard_normal((n_items, 4))
    return lambda codes: np.round(users[codes] @ items.T, 1)  # ties included


def test_results_are_labelled_sampled(split) -> None:
    train, test = split
    result = evaluate_sampled(
        _scorer(train.n_users, train.n_items), train, test, SampledConfig(n_negatives=20)
    )
    assert result.protocol == "sampled"
    assert result.to_dict()["protocol"] == "sampled"
    assert all(name.startswith("sampled_") for name in result.per_user)
    assert all(name.startswith("sampled_") for name in result.means)
    assert result.counts["n_negatives"] == 20


def test_negatives_avoid_interacted_items_and_are_seeded(split) -> None:
    train, test = split
    from privrank.metrics._prepare import pair_set

    seen, relevant = pair_set(train), pair_set(test)
    users = np.flatnonzero(relevant.counts() > 0)[:30]
    first, short = _candidates(users, seen, relevant, 15, np.random.default_rng(1))
    again, _ = _candidates(users, seen, relevant, 15, np.random.default_rng(1))
    np.testing.assert_array_equal(first, again)
    assert short == 0
    for row, user in enumerate(users):
        positives = set(relevant.indices[relevant.indptr[user] : relevant.indptr[user + 1]])
        trained = set(seen.indices[seen.indptr[user] : seen.indptr[user + 1]])
        candidates = [i for i in first[row].tolist() if i >= 0]
        assert candidates == sorted(set(candidates))
        negatives = set(candidates) - positives
        assert positives <= set(candidates)
        assert len(negatives) == 15 and not negatives & (trained | positives)


def test_short_pools_are_counted() -> None:
    from privrank.data.interactions import Interactions

    train = Interactions.from_codes(np.array([0, 0]), np.array([0, 1]), n_users=1, n_items=5)
    test = Interactions.from_codes(np.array([0]), np.array([2]), n_users=1, n_items=5)
    result = evaluate_sampled(_scorer(1, 5), train, test, SampledConfig(n_negatives=10))
    assert result.counts["users_with_fewer_negatives"] == 1


def test_batch_size_independence_and_brute_force(split) -> None:
    train, test = split
    score = _scorer(train.n_users, train.n_items)
    config = SampledConfig(n_negatives=25, seed=3, cutoffs=(5,), batch_size=7)
    result = evaluate_sampled(score, train, test, config)
    bigger = evaluate_sampled(score, train, test, config.model_copy(update={"batch_size": 500}))
    for name, values in result.per_user.items():
        np.testing.assert_array_equal(values, bigger.per_user[name])
    # Brute force: redraw the same candidates and rank them by (score desc, code asc).
    from privrank.metrics._prepare import pair_set

    seen, relevant = pair_set(train), pair_set(test)
    candidates, _ = _candidates(result.users, seen, relevant, 25, np.random.default_rng(3))
    scores = score(result.users)
    for row, user in enumerate(result.users):
        pool = [i for i in candidates[row].tolist() if i >= 0]
        ranked = sorted(pool, key=lambda i, r=row: (-scores[r, i], i))
        grades = {
            int(i): 1.0 for i in relevant.indices[relevant.indptr[user] : relevant.indptr[user + 1]]
        }
        expected = reference_metrics(ranked, grades, 5)
        assert result.per_user["sampled_ndcg@5"][row] == pytest.approx(expected["ndcg"])
        assert result.per_user["sampled_recall@5"][row] == pytest.approx(expected["recall"])


def test_sampled_scores_exceed_full_ranking(split) -> None:
    from privrank.metrics import evaluate

    train, test = split
    score = _scorer(train.n_users, train.n_items)
    full = evaluate(score, train, test)
    sampled = evaluate_sampled(score, train, test, SampledConfig(n_negatives=10, cutoffs=(10,)))
    assert sampled.means["sampled_hit_rate@10"] > full.means["hit_rate@10"]
