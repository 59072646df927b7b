"""The sparse metrics layer is bit-identical to the previous dense one (the oracle).

The oracle, ``tests/metrics/_reference_ranking.py``, is main's former ``from_lists`` (one
``searchsorted`` of every list entry) and running sums over whole ``[users, K]`` rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from tests.models.test_realdata_ml100k import ml100k

from privrank.metrics import ranking
from privrank.metrics._prepare import evaluation_pairs
from privrank.metrics.evaluate import EvaluationConfig, evaluate
from privrank.metrics.topk import ragged_rows, top_k
from privrank.workflow.protocols import prepare

from ._reference_ranking import reference_from_lists, reference_metric

METRICS = ("recall", "precision", "ndcg", "mrr", "hit_rate", "map")
GAINS = ("binary", "linear", "exponential")


def _case(rng: np.random.Generator, many: bool, graded: bool):
    n, depth, n_items = int(rng.integers(1, 30)), int(rng.integers(1, 12)), int(rng.integers(1, 40))
    rows = []
    for _ in range(n):
        row = rng.permutation(n_items)[:depth]
        rows.append(np.r_[row, -np.ones(depth - len(row), dtype=np.int64)])
    top = np.array(rows, dtype=np.int64).reshape(n, depth)
    position, items, grades = [], [], []
    for user in range(n):
        count = min(int(rng.integers(1, 60 if many else 4)), n_items)
        chosen = rng.choice(n_items, size=count, replace=False)
        position += [user] * count
        items += chosen.tolist()
        grades += rng.integers(1, 4, size=count).astype(float).tolist()
    weights = np.array(grades) if graded else None
    return top, np.array(position), np.array(items), weights


@pytest.mark.parametrize("seed", range(4))
def test_random_lists_with_ties_padding_and_grades_match_the_oracle_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    for trial in range(60):
        # Few judgements per user take the comparison path, many the searchsorted path.
        top, position, items, grades = _case(rng, many=trial % 2 == 1, graded=trial % 3 != 0)
        fast = ranking.RankedRelevance.from_lists(top, position, items, grades)
        slow = reference_from_lists(top, position, items, grades)
        assert np.array_equal(fast.grades, slow.grades)
        assert np.array_equal(fast.ideal, slow.ideal)
        assert np.array_equal(fast.n_relevant, slow.n_relevant)
        for k in range(1, top.shape[1] + 1):
            for metric in METRICS:
                for gain in GAINS:
                    for denominator in ("relevant", "min_k_relevant"):
                        got = ranking.compute(
                            metric,
                            fast,
                            k,
                            gain=gain,
                            recall_denominator=denominator,
                            map_denominator=denominator,
                        )
                        want = reference_metric(
                            metric,
                            slow,
                            k,
                            gain=gain,
                            recall_denominator=denominator,
                            map_denominator=denominator,
                        )
                        assert np.array_equal(got, want), (trial, metric, k, gain)


def test_scores_with_ties_evaluated_end_to_end_match_the_oracle():
    """Tied scores (4 distinct values), ranked by ``top_k``, then both layers on its lists."""
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, size=(50, 30)).astype(np.float64)
    top = top_k(scores, 10).items
    position = np.repeat(np.arange(50), 3)
    items = np.concatenate([rng.choice(30, size=3, replace=False) for _ in range(50)])
    fast = ranking.RankedRelevance.from_lists(top, position, items)
    slow = reference_from_lists(top, position, items)
    for k in (1, 5, 10):
        for metric in METRICS:
            assert np.array_equal(
                ranking.compute(metric, fast, k), reference_metric(metric, slow, k)
            )


def test_judged_items_must_be_codes():
    with pytest.raises(Exception, match="judged items must be item codes"):
        ranking.RankedRelevance.from_lists(np.zeros((1, 2), dtype=np.int64), [0], [-1])


@pytest.mark.realdata
def test_ml100k_most_popular_and_random_scores_match_the_oracle():
    """ML-100K holdout: every per-user metric of ``evaluate`` equals the oracle's on the same
    top lists, for a popularity and a random scorer."""
    prepared = prepare("ml100k-holdout", ml100k())
    train, test = prepared.train, prepared.test
    counts = np.bincount(train.items(), minlength=train.n_items).astype(np.float64)
    rng = np.random.default_rng(0)
    noise = rng.random((train.n_users, train.n_items))
    config = EvaluationConfig(cutoffs=(5, 10, 20), keep_recommendations=True)
    for scorer in (lambda users: np.tile(counts, (len(users), 1)), lambda users: noise[users]):
        result = evaluate(scorer, train, test, config)
        _, relevant, users = evaluation_pairs(train, test)
        position, items, _ = ragged_rows(relevant.indptr, relevant.indices, users, None)
        slow = reference_from_lists(result.recommendations, position, items)
        for k in config.cutoffs:
            for metric in config.metrics:
                want = reference_metric(metric, slow, k, gain="binary")
                assert np.array_equal(result.per_user[f"{metric}@{k}"], want), (metric, k)
