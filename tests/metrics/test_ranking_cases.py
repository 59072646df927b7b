"""Hand-computed metric values (graded NDCG, ties, denominators) and a textbook oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privrank.errors import ConfigError, DataError
from privrank.metrics import ranking
from privrank.metrics.ranking import RankedRelevance
from privrank.metrics.topk import top_k

from ._oracle import reference_metrics


def _judge(top, judgements) -> RankedRelevance:
    position = np.repeat(np.arange(len(judgements)), [len(j) for j in judgements])
    items = [i for j in judgements for i in j]
    grades = [g for j in judgements for g in j.values()]
    return RankedRelevance.from_lists(np.array(top), position, items, grades)


def test_graded_ndcg_by_hand() -> None:
    # List: a(3), b(not relevant), c(2); relevant: a=3, c=2, d=1 (d not retrieved).
    judged = _judge([[0, 1, 2]], [{0: 3.0, 2: 2.0, 3: 1.0}])
    log3 = math.log2(3)
    linear = (3 + 2 / 2) / (3 + 2 / log3 + 1 / 2)
    exponential = (7 + 3 / 2) / (7 + 3 / log3 + 1 / 2)
    binary = (1 + 1 / 2) / (1 + 1 / log3 + 1 / 2)
    assert ranking.ndcg(judged, 3, gain="linear")[0] == pytest.approx(linear, rel=1e-14)
    assert ranking.ndcg(judged, 3, gain="exponential")[0] == pytest.approx(exponential, rel=1e-14)
    assert ranking.ndcg(judged, 3, gain="binary")[0] == pytest.approx(binary, rel=1e-14)
    assert linear == pytest.approx(0.840008, abs=1e-6)
    assert exponential == pytest.approx(0.904950, abs=1e-6)
    # At k=1 the ideal list is [a]: a perfect first place.
    assert ranking.ndcg(judged, 1, gain="exponential")[0] == 1.0


def test_ndcg_with_tied_scores_uses_the_documented_order() -> None:
    # Items 1, 2 and 4 tie at 3.0: the ranking is 1, 2, 4, then 3 (lower code first).
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    top = top_k(scores, 3).items
    assert top.tolist() == [[1, 2, 4]]
    judged = _judge(top, [{4: 1.0}])
    assert ranking.ndcg(judged, 3)[0] == pytest.approx(1 / math.log2(4))
    assert ranking.mrr(judged, 3)[0] == pytest.approx(1 / 3)
    assert ranking.hit_rate(judged, 2)[0] == 0.0


def test_denominators_by_hand() -> None:
    # Five relevant items, two retrieved at ranks 1 and 3 of a 4-list.
    judged = _judge([[10, 11, 12, 13]], [{10: 1, 12: 1, 20: 1, 21: 1, 22: 1}])
    assert ranking.recall(judged, 4)[0] == pytest.approx(2 / 5)
    assert ranking.recall(judged, 4, denominator="min_k_relevant")[0] == pytest.approx(2 / 4)
    assert ranking.precision(judged, 4)[0] == pytest.approx(2 / 4)
    ap_sum = 1 / 1 + 2 / 3
    assert ranking.average_precision(judged, 4)[0] == pytest.approx(ap_sum / 4)
    assert ranking.average_precision(judged, 4, denominator="relevant")[0] == pytest.approx(
        ap_sum / 5
    )
    assert ranking.hits(judged, 2)[0] == 1.0


def test_padding_is_never_relevant_and_precision_divides_by_k() -> None:
    judged = _judge([[5, -1, -1]], [{5: 1.0, 6: 1.0}])
    assert ranking.precision(judged, 3)[0] == pytest.approx(1 / 3)
    assert ranking.recall(judged, 3)[0] == pytest.approx(1 / 2)


def test_invalid_inputs() -> None:
    with pytest.raises(DataError, match="at least one relevant"):
        _judge([[0, 1], [1, 2]], [{0: 1.0}, {}])
    with pytest.raises(DataError, match="> 0"):
        _judge([[0, 1]], [{0: 0.0}])
    with pytest.raises(DataError, match="twice"):
        RankedRelevance.from_lists(np.array([[0]]), [0, 0], [3, 3])
    judged = _judge([[0, 1]], [{0: 1.0}])
    with pytest.raises(ConfigError, match="cutoff"):
        ranking.ndcg(judged, 3)
    with pytest.raises(ConfigError, match="gain"):
        ranking.ndcg(judged, 1, gain="cubic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown metric"):
        ranking.compute("auc", judged, 1)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 15), max_size=8, unique=True),
            st.dictionaries(st.integers(0, 15), st.integers(1, 4), min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["binary", "linear", "exponential"]),
)
def test_every_metric_equals_the_textbook_oracle(users, gain) -> None:
    depth = 8
    top = np.full((len(users), depth), -1)
    for row, (ranked, _) in enumerate(users):
        top[row, : len(ranked)] = ranked
    judged = _judge(top, [dict(j) for _, j in users])
    for k in range(1, depth + 1):
        expected = [
            reference_metrics(ranked, {i: float(g) for i, g in j.items()}, k, gain=gain)
            for ranked, j in users
        ]
        got = {
            "recall": ranking.recall(judged, k),
            "recall_min": ranking.recall(judged, k, denominator="min_k_relevant"),
            "precision": ranking.precision(judged, k),
            "ndcg": ranking.ndcg(judged, k, gain=gain),
            "mrr": ranking.mrr(judged, k),
            "hit_rate": ranking.hit_rate(judged, k),
            "map": ranking.average_precision(judged, k),
            "map_rel": ranking.average_precision(judged, k, denominator="relevant"),
        }
        for name, values in got.items():
            np.testing.assert_allclose(
                values, [e[name] for e in expected], rtol=1e-12, err_msg=f"{name}@{k}"
            )
