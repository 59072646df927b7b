"""Property tests of the ranking metrics against ranx on random rankings and graded qrels.

Where the definitions coincide, ours must equal ranx's for every user:

==============================  =====================================================
ours                            ranx
==============================  =====================================================
``recall`` (``relevant``)       ``recall@k`` (hits / |R|)
``precision``                   ``precision@k`` (hits / k, even for shorter runs)
``ndcg`` gain ``linear``        ``ndcg@k`` (Järvelin & Kekäläinen: gain = grade)
``ndcg`` gain ``exponential``   ``ndcg_burges@k`` (Burges: gain = 2^grade - 1)
``ndcg`` gain ``binary``        ``ndcg@k`` with every grade set to 1
``mrr``                         ``mrr@k``
``hit_rate``                    ``hit_rate@k``
``average_precision``           ``map@k`` (divides by |R|: our ``denominator="relevant"``)
==============================  =====================================================

Differences that are not compared: our default MAP denominator ``min(k, |R|)`` and the recall
variant ``min_k_relevant`` have no ranx counterpart (they are checked against the textbook
oracle in ``test_ranking_cases.py``). Runs are given distinct scores, so ranx's ordering of
ties (not part of its contract) never matters.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privrank.metrics import ranking
from privrank.metrics.ranking import RankedRelevance

ranx = pytest.importorskip("ranx")
pytestmark = pytest.mark.filterwarnings("ignore:unsafe cast from uint64")

N_ITEMS = 25


@st.composite
def rankings_and_qrels(draw):
    """Per user: a ranked list (1..K distinct items) and graded judgements (>= 1 item)."""
    n_users = draw(st.integers(1, 5))
    depth = draw(st.integers(1, 10))
    lists, judgements = [], []
    for _ in range(n_users):
        ranked = draw(
            st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=depth, unique=True)
        )
        judged = draw(
            st.dictionaries(st.integers(0, N_ITEMS - 1), st.integers(1, 3), min_size=1, max_size=8)
        )
        lists.append(ranked)
        judgements.append(judged)
    return depth, lists, judgements


def _ours(depth, lists, judgements) -> RankedRelevance:
    top = np.full((len(lists), depth), -1, dtype=np.int64)
    for row, ranked in enumerate(lists):
        top[row, : len(ranked)] = ranked
    position = np.repeat(np.arange(len(lists)), [len(j) for j in judgements])
    items = np.array([i for j in judgements for i in j], dtype=np.int64)
    grades = np.array([g for j in judgements for g in j.values()], dtype=np.float64)
    return RankedRelevance.from_lists(top, position, items, grades)


def _ranx(lists, judgements, metrics, *, binary=False):
    qrels = ranx.Qrels.from_dict(
        {
            f"u{u}": {f"d{i}": (1 if binary else int(g)) for i, g in judged.items()}
            for u, judged in enumerate(judgements)
        }
    )
    run = ranx.Run.from_dict(
        {
            f"u{u}": {f"d{i}": float(len(ranked) - r) for r, i in enumerate(ranked)}
            for u, ranked in enumerate(lists)
        }
    )
    scores = ranx.evaluate(qrels, run, metrics, return_mean=False, threads=1)
    return scores if len(metrics) > 1 else {metrics[0]: scores}


@settings(max_examples=50, deadline=None)
@given(rankings_and_qrels())
def test_metrics_equal_ranx(case) -> None:
    depth, lists, judgements = case
    ours = _ours(depth, lists, judgements)
    cutoffs = range(1, depth + 1)
    kinds = ("recall", "precision", "ndcg", "ndcg_burges", "mrr", "hit_rate", "map")
    theirs = _ranx(lists, judgements, [f"{m}@{k}" for m in kinds for k in cutoffs])
    binary = _ranx(lists, judgements, [f"ndcg@{k}" for k in cutoffs], binary=True)
    for k in cutoffs:
        expected = {
            "recall": theirs[f"recall@{k}"],
            "precision": theirs[f"precision@{k}"],
            "ndcg_linear": theirs[f"ndcg@{k}"],
            "ndcg_exponential": theirs[f"ndcg_burges@{k}"],
            "ndcg_binary": binary[f"ndcg@{k}"],
            "mrr": theirs[f"mrr@{k}"],
            "hit_rate": theirs[f"hit_rate@{k}"],
            "map": theirs[f"map@{k}"],
        }
        got = {
            "recall": ranking.recall(ours, k),
            "precision": ranking.precision(ours, k),
            "ndcg_linear": ranking.ndcg(ours, k, gain="linear"),
            "ndcg_exponential": ranking.ndcg(ours, k, gain="exponential"),
            "ndcg_binary": ranking.ndcg(ours, k, gain="binary"),
            "mrr": ranking.mrr(ours, k),
            "hit_rate": ranking.hit_rate(ours, k),
            "map": ranking.average_precision(ours, k, denominator="relevant"),
        }
        for name, value in got.items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-12, atol=1e-12, err_msg=name)
