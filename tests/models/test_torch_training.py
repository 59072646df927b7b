"""Validation metrics shared by the torch models, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.models._torch_training import ranking_metrics


def brute_force(scores: np.ndarray, targets: list[np.ndarray], k: int):
    ndcg, hit = [], []
    for row, relevant in zip(scores, targets, strict=True):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        gains = [
            1 / np.log2(r + 2) for r, i in enumerate(order) if i in relevant and row[i] > -1e30
        ]
        ideal = sum(1 / np.log2(r + 2) for r in range(min(k, len(relevant))))
        ndcg.append(sum(gains) / ideal)
        hit.append(float(bool(gains)))
    return np.array(ndcg), np.array(hit)


def test_ranking_metrics_match_brute_force_with_ties_and_masks():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(30, 12)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    targets = [rng.choice(12, size=rng.integers(1, 4), replace=False) for _ in range(30)]
    for k in (1, 3, 5):
        ndcg, hit = ranking_metrics(scores, targets, k)
        expected_ndcg, expected_hit = brute_force(scores, targets, k)
        np.testing.assert_allclose(ndcg, expected_ndcg, rtol=1e-12)
        np.testing.assert_array_equal(hit, expected_hit)


def test_single_target_known_answer():
    scores = np.array([[0.1, 0.9, 0.5, 0.5]])
    ndcg, hit = ranking_metrics(scores, [np.array([3])], 3)  # rank 2 (tie, higher code)
    assert ndcg[0] == pytest.approx(1 / np.log2(4)) and hit[0] == 1.0


def test_nan_scores_rank_like_minus_infinity():
    """A diverging fit's NaN scores are never hits and never push a hit down (as ``-inf``)."""
    scores = np.array([[np.nan, 0.2, 0.9, np.nan], [0.5, np.nan, 0.1, 0.3]])
    ndcg, hit = ranking_metrics(scores, [np.array([0, 1]), np.array([3])], 2)
    # Row 0: list (2, 1), hit at rank 2 of ideal 2 hits; row 1: list (0, 3), hit at rank 2.
    ideal = 1 + 1 / np.log2(3)
    np.testing.assert_array_equal(ndcg, [(1 / np.log2(3)) / ideal, 1 / np.log2(3)])
    np.testing.assert_array_equal(hit, [1.0, 1.0])
