"""Exact, deterministic top-k: hand cases, a brute-force oracle, ties, -inf, NaN, memory bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privrank.errors import ConfigError, DataError
from privrank.metrics import topk
from privrank.metrics.topk import as_score_array, mask_items, ragged_rows, top_k

from ._oracle import reference_top_k


def test_ties_are_broken_by_lower_item_code() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]], dtype=np.float32)
    assert top_k(scores, 2).items.tolist() == [[1, 2]]
    assert top_k(scores, 4).items.tolist() == [[1, 2, 4, 3]]
    assert top_k(scores, 4).scores.tolist() == [[3.0, 3.0, 3.0, 2.0]]


def test_negative_zero_equals_zero() -> None:
    scores = np.array([[-0.0, 0.0, -1.0]], dtype=np.float32)
    assert top_k(scores, 2).items.tolist() == [[0, 1]]


def test_minus_inf_items_are_never_recommended_and_lists_are_padded() -> None:
    scores = np.array([[-np.inf, 1.0, -np.inf], [-np.inf] * 3])
    result = top_k(scores, 4)
    assert result.items.tolist() == [[1, -1, -1, -1], [-1, -1, -1, -1]]
    assert np.isneginf(result.scores[0, 1:]).all()


def test_nan_scores_are_an_error() -> None:
    scores = np.zeros((3, 100), dtype=np.float32)
    scores[1, 57] = np.nan
    with pytest.raises(DataError, match="NaN"):
        top_k(scores, 5)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        top_k(np.zeros((2, 3)), 0)
    with pytest.raises(ConfigError):
        top_k(np.zeros(3), 1)
    with pytest.raises(ConfigError):
        top_k([[1.0]], 1)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    scores=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 40), st.integers(1, 120)),
        elements=st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 1.0, 2.0]) | st.floats(-5, 5, width=32),
    ),
    k=st.integers(1, 30),
    threads=st.integers(1, 3),
)
def test_matches_brute_force_with_ties(scores: np.ndarray, k: int, threads: int) -> None:
    expected = reference_top_k(scores, k)
    result = top_k(scores.copy(), k, threads=threads)
    np.testing.assert_array_equal(result.items, expected)
    gathered = np.take_along_axis(scores, np.maximum(expected, 0), axis=1)
    np.testing.assert_array_equal(result.scores, np.where(expected >= 0, gathered, -np.inf))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from([0.0, 1.0, 2.0, -np.inf]), min_size=6, max_size=6),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 6),
)
def test_equals_a_full_sort(rows: list[list[float]], k: int) -> None:
    scores = np.array(rows, dtype=np.float32)  # few distinct values: many ties
    result = top_k(scores, k)
    for row, got, got_values in zip(scores, result.items, result.scores, strict=True):
        order = np.lexsort((np.arange(len(row)), -row))[:k]
        # Items scored -inf are never recommended: their slots hold -1 (score -inf).
        np.testing.assert_array_equal(got, np.where(np.isfinite(row[order]), order, -1))
        np.testing.assert_array_equal(got_values, row[order])


def test_large_rows_match_brute_force_float64_and_threads() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.standard_normal((300, 2000)), 2)  # many ties at 2 decimals
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    expected = reference_top_k(scores, 25)
    for threads in (1, 2, 4):
        np.testing.assert_array_equal(top_k(scores, 25, threads=threads).items, expected)


def test_constant_scores_are_split_into_bounded_sub_batches(monkeypatch) -> None:
    monkeypatch.setattr(topk, "MAX_CANDIDATES", 500)
    scores = np.ones((50, 400), dtype=np.float32)
    np.testing.assert_array_equal(top_k(scores, 7).items, np.tile(np.arange(7), (50, 1)))


def test_torch_and_integer_inputs() -> None:
    values = torch.tensor([[1.0, 5.0, 5.0], [2.0, 0.0, 1.0]], dtype=torch.bfloat16)
    assert top_k(values, 2).items.tolist() == [[1, 2], [0, 2]]
    assert top_k(np.array([[3, 1, 3]]), 3).items.tolist() == [[0, 2, 1]]
    assert as_score_array(np.array([[1, 2]])).dtype == np.float64


def test_score_array_ownership() -> None:
    owned = np.zeros((2, 3), dtype=np.float32)
    assert as_score_array(owned) is owned
    assert as_score_array(owned, copy=True) is not owned
    shared = np.broadcast_to(np.arange(3, dtype=np.float32), (2, 3))
    writable = as_score_array(shared)
    assert writable.flags.writeable and not np.shares_memory(writable, shared)
    expanded = torch.arange(3.0).expand(2, 3)
    assert as_score_array(expanded).flags.c_contiguous


def test_ragged_rows_and_mask() -> None:
    indptr = np.array([0, 2, 2, 5])
    indices = np.array([1, 3, 0, 2, 4])
    position, items, data = ragged_rows(indptr, indices, np.array([2, 0, 1]), indices * 10)
    assert position.tolist() == [0, 0, 0, 1, 1]
    assert items.tolist() == [0, 2, 4, 1, 3]
    assert data.tolist() == [0, 20, 40, 10, 30]
    scores = np.zeros((3, 5))
    mask_items(scores, position, items)
    assert np.isneginf(scores).sum() == 5 and np.isneginf(scores[0, [0, 2, 4]]).all()
