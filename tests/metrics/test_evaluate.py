"""The batched evaluator: a brute-force oracle, batch-size invariance, exclusion, counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError, DataError
from privrank.metrics import EvaluationConfig, evaluate

from ._oracle import reference_metrics, reference_top_k
from .conftest import make_split


def _factor_scorer(n_users: int, n_items: int, seed: int = 0, tie_step: float | None = None):
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, 6)).astype(np.float32)
    items = rng.standard_normal((n_items, 6)).astype(np.float32)

    def score(codes: np.ndarray) -> np.ndarray:
        out = users[codes] @ items.T
        return np.round(out / tie_step) * tie_step if tie_step else out

    return score


def _brute_force(score, train: Interactions, test: Interactions, k: int, gain: str):
    """Per-user metrics from a dense score matrix, a full sort per user and textbook formulas."""
    seen: dict[int, set[int]] = {}
    for u, i in zip(train.users().tolist(), train.items().tolist(), strict=True):
        seen.setdefault(u, set()).add(i)
    grades: dict[int, dict[int, float]] = {}
    values = test.values()
    for u, i, v in zip(test.users().tolist(), test.items().tolist(), values.tolist(), strict=True):
        grades.setdefault(u, {})[i] = max(v, grades.get(u, {}).get(i, 0.0))
    users = sorted(grades)
    scores = np.asarray(score(np.array(users)), dtype=np.float64)
    for row, u in enumerate(users):
        scores[row, list(seen.get(u, ()))] = -np.inf
    top = reference_top_k(scores, k)
    out = [
        reference_metrics([i for i in top[row] if i >= 0], grades[u], k, gain=gain)
        for row, u in enumerate(users)
    ]
    return np.array(users), top, out


@pytest.mark.parametrize(
    ("graded", "gain"), [(False, "binary"), (True, "linear"), (True, "exponential")]
)
def test_matches_brute_force_oracle(split, graded: bool, gain: str) -> None:
    train, test = split
    score = _factor_scorer(train.n_users, train.n_items, tie_step=0.25)  # plenty of ties
    config = EvaluationConfig(
        cutoffs=(5, 10),
        graded=graded,
        ndcg_gain="exponential" if gain == "exponential" else "linear",
        batch_size=17,
        keep_recommendations=True,
    )
    result = evaluate(score, train, test, config)
    users, top, expected = _brute_force(score, train, test, 10, gain)
    np.testing.assert_array_equal(result.users, users)
    np.testing.assert_array_equal(result.recommendations, top)
    for name, key in [
        ("recall", "recall"),
        ("precision", "precision"),
        ("ndcg", "ndcg"),
        ("mrr", "mrr"),
        ("hit_rate", "hit_rate"),
        ("map", "map"),
    ]:
        np.testing.assert_allclose(
            result.per_user[f"{name}@10"], [e[key] for e in expected], rtol=1e-12, err_msg=name
        )
    assert result.means["ndcg@10"] == pytest.approx(np.mean([e["ndcg"] for e in expected]))


def test_results_do_not_depend_on_batch_size_or_threads(split) -> None:
    train, test = split
    score = _factor_scorer(train.n_users, train.n_items, tie_step=0.5)
    results = [
        evaluate(score, train, test, EvaluationConfig(batch_size=b, threads=t, cutoffs=(3, 20)))
        for b, t in [(1, 1), (7, 2), (64, 3), (10_000, None)]
    ]
    for other in results[1:]:
        assert other.per_user.keys() == results[0].per_user.keys()
        for name, values in results[0].per_user.items():
            np.testing.assert_array_equal(other.per_user[name], values, err_msg=name)
        assert other.aggregate == results[0].aggregate


def test_training_items_are_never_recommended(split) -> None:
    train, test = split
    score = _factor_scorer(train.n_users, train.n_items)
    result = evaluate(
        score, train, test, EvaluationConfig(cutoffs=(30,), keep_recommendations=True)
    )
    seen = train.to_csr()
    for row, user in enumerate(result.users):
        recommended = set(result.recommendations[row].tolist()) - {-1}
        assert not recommended & set(seen[user].indices.tolist())
    kept = evaluate(
        score,
        train,
        test,
        EvaluationConfig(cutoffs=(30,), keep_recommendations=True, exclude_train=False),
    )
    assert (kept.recommendations >= 0).all()
    overlap = [
        len(set(kept.recommendations[r].tolist()) & set(seen[u].indices.tolist()))
        for r, u in enumerate(kept.users)
    ]
    assert sum(overlap) > 0


def test_counts_and_excluded_users() -> None:
    train = Interactions.from_codes(
        np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), n_users=5, n_items=4
    )
    # User 0: test item 1 is also a training item; user 3 is cold; users 1, 2, 4: no test.
    test = Interactions.from_codes(
        np.array([0, 0, 3, 3]), np.array([1, 3, 0, 0]), n_users=5, n_items=4
    )
    score = _factor_scorer(5, 4)
    result = evaluate(score, train, test, EvaluationConfig(cutoffs=(2,)))
    assert result.users.tolist() == [0, 3]
    assert result.counts == {
        "users_evaluated": 2,
        "users_without_test_items": 3,
        "cold_users": 1,
        "test_pairs": 3,
        "test_pairs_in_train": 1,
    }
    summary = result.to_dict()
    assert summary["protocol"] == "full_ranking"
    assert set(summary["timing"]) >= {"scoring_s", "ranking_s", "metrics_s", "total_s"}


def test_torch_scorer_equals_numpy_scorer(split) -> None:
    train, test = split
    score = _factor_scorer(train.n_users, train.n_items)

    def torch_score(codes: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(score(codes)).requires_grad_(False)

    a = evaluate(score, train, test)
    b = evaluate(torch_score, train, test)
    for name in a.per_user:
        np.testing.assert_array_equal(a.per_user[name], b.per_user[name])


def test_scores_are_copied_on_request(split) -> None:
    train, test = split
    users = np.flatnonzero(test.user_counts() > 0)
    ordered = _factor_scorer(train.n_users, train.n_items)(users)  # rows in evaluation order

    def view_scorer(codes: np.ndarray) -> np.ndarray:
        start = int(np.searchsorted(users, codes[0]))
        return ordered[start : start + len(codes)]  # a view of shared state

    original = ordered.copy()
    evaluate(view_scorer, train, test, EvaluationConfig(batch_size=50, copy_scores=True))
    np.testing.assert_array_equal(ordered, original)
    evaluate(view_scorer, train, test, EvaluationConfig(batch_size=50))
    assert np.isneginf(ordered).any()  # without copy_scores the evaluator masks in place


def test_errors(split) -> None:
    train, test = split
    with pytest.raises(ConfigError, match="shape"):
        evaluate(lambda codes: np.zeros((len(codes), 3)), train, test)
    other = Interactions.from_codes(np.array([0]), np.array([0]), n_users=1, n_items=1)
    with pytest.raises(ConfigError, match="vocabulary"):
        evaluate(lambda codes: np.zeros((len(codes), 1)), train, other)
    no_values = Interactions.from_codes(
        test.users(), test.items(), n_users=test.n_users, n_items=test.n_items
    )
    with pytest.raises(ConfigError, match="value column"):
        evaluate(_factor_scorer(120, 90), train, no_values, EvaluationConfig(graded=True))
    negative = Interactions.from_codes(
        test.users(),
        test.items(),
        n_users=test.n_users,
        n_items=test.n_items,
        values=-np.ones(len(test), dtype=np.float32),
    )
    with pytest.raises(DataError, match="not > 0"):
        evaluate(_factor_scorer(120, 90), train, negative, EvaluationConfig(graded=True))
    with pytest.raises(ValueError, match="cutoffs"):
        EvaluationConfig(cutoffs=(0,))
    with pytest.raises(ValueError):
        EvaluationConfig(batch_size=10, unknown=1)  # type: ignore[call-arg]


def test_beyond_metrics_are_reported(split) -> None:
    train, test = make_split(seed=3)
    result = evaluate(_factor_scorer(train.n_users, train.n_items), train, test)
    for k in (10, 20):
        assert 0 < result.aggregate[f"coverage@{k}"] <= 1
        assert 0 <= result.aggregate[f"gini@{k}"] < 1
        assert result.means[f"novelty@{k}"] > 0
        assert result.means[f"arp@{k}"] > 0
