r"""Each retriever's top ``N`` unseen items, their merge into candidates, and candidate ranks.

The candidate stage of :func:`~privrank.ranking.two_stage._features.rank_features`: numba
kernels and numpy calls that touch each catalogue-wide array about once per retriever, and no
dense rank array:

- :func:`top_lists`: each row's ``depth`` best items by descending score, ties by the lower
  code, unseen items before seen ones. Every item gets one unique ``uint64`` key that orders it
  so (:func:`_item_key`, a numba kernel), one partition of the keys (numpy's: numba's took
  nine times as long on 12,101 items) finds the ``depth`` largest, and a sort of those orders
  them; the item code is read back from the key, so no index array is gathered.
- :func:`merge_top_lists`: the ``N`` candidates by merged key (the best rank over the proposing
  retrievers, then the earlier retriever, then the lower code), read from the top lists alone.
  An item outside every proposing retriever's top ``N`` has a larger merged key than every item
  inside one (its capped rank is ``N + 1``), and the union of the top lists holds at least
  ``N`` unseen items whenever the row has that many (each list puts unseen items first), so the
  ``N`` smallest keys are always in the union.
- :func:`candidate_ranks`: each candidate's rank in one retriever's top list, ``depth + 1``
  outside it.

The tests (``tests/ranking/test_two_stage.py``) check all three against a full sort of every
row and a slow merge of the full ranks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["candidate_ranks", "merge_top_lists", "top_lists"]

_NO_KEY = np.iinfo(np.int64).max


def top_lists(
    scores: np.ndarray, eligible: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``depth`` best items, and its best unseen score.

    Args:
        scores: ``(n, n_items)`` scores, compared as float32; a NaN counts as ``-inf``, ``-0.0``
            ties with ``0.0``.
        eligible: ``(n, n_items)`` bool, the items outside each query's history.
        depth: Items per list (at most ``n_items``).

    Returns:
        ``(top, best)``: ``(n, depth)`` int64 item codes, best first (unseen items by descending
        score, ties by the lower code, then seen items by the lower code), and ``(n,)`` float64
        the best unseen score (0 when it is not finite or the row has no unseen item).
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    eligible = np.ascontiguousarray(eligible, dtype=np.bool_)
    n_rows, n_items = scores.shape
    if not 0 < depth <= n_items:
        raise ValueError(f"depth must be in [1, {n_items}], got {depth}")
    keys = np.empty((n_rows, n_items), dtype=np.uint64)
    _item_keys(scores.view(np.uint32), eligible, keys)
    if depth < n_items:  # numpy's partition: several times faster than numba's
        keys = np.partition(keys, n_items - depth, axis=1)[:, n_items - depth :]
    keys = np.sort(keys, axis=1)[:, ::-1]
    top = np.int64(0xFFFFFFFF) - (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    rows = np.arange(n_rows)
    first = scores[rows, top[:, 0]]
    usable = eligible[rows, top[:, 0]] & np.isfinite(first)
    return top, np.where(usable, first, 0.0).astype(np.float64)


def merge_top_lists(
    tops: list[np.ndarray],
    positions: list[int],
    n_retrievers: int,
    eligible: np.ndarray,
    n_candidates: int,
) -> np.ndarray:
    """``(n, n_candidates)`` int64 candidates by merged key (module docstring); ``-1`` pads.

    Args:
        tops: The proposing retrievers' :func:`top_lists` (each ``(n, depth)``, the same depth,
            at least ``min(n_candidates, n_items)``).
        positions: Each proposing retriever's position among all ``n_retrievers`` (the
            tie-break after the rank).
        n_retrievers: Retrievers in all (proposing or not).
        eligible: ``(n, n_items)`` bool.
        n_candidates: ``N``.
    """
    n_rows = eligible.shape[0]
    chosen = np.full((n_rows, n_candidates), -1, dtype=np.int64)
    if not tops:
        return chosen
    _merge(
        np.stack(tops).astype(np.int64, copy=False),
        np.asarray(positions, dtype=np.int64),
        n_retrievers,
        np.ascontiguousarray(eligible, dtype=np.bool_),
        chosen,
    )
    return chosen


def candidate_ranks(top: np.ndarray, candidates: np.ndarray, n_items: int) -> np.ndarray:
    """``(n, N)`` int64: each candidate's 1-based position in ``top`` (``depth + 1`` outside
    it; padding ``-1`` reads item 0's)."""
    out = np.empty(candidates.shape, dtype=np.int64)
    _candidate_ranks(top, candidates, n_items, out)
    return out


@njit(cache=True, inline="always")
def _item_key(bits, eligible, code):  # pragma: no cover - compiled
    """The item's unique key: the float32 score's bits mapped to an unsigned integer of the
    same order (high 32 bits; NaN read as ``-inf``, ``-0.0`` as ``+0.0``; a negative float's
    bits inverted, a positive float's sign bit set), then the reversed code (low 32 bits); a
    seen item keeps only the code part, below every unseen item's key, even one at ``-inf``."""
    reversed_code = np.uint64(0xFFFFFFFF - code)
    if not eligible:
        return reversed_code
    if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN
        bits = np.uint32(0xFF800000)
    elif bits == np.uint32(0x80000000):  # -0.0
        bits = np.uint32(0)
    negative = bits >> np.uint32(31)
    bits = bits ^ np.uint32(0xFFFFFFFF) if negative else bits | np.uint32(0x80000000)
    return (np.uint64(bits) << np.uint64(32)) | reversed_code


@njit(cache=True)
def _item_keys(bits, eligible, keys):  # pragma: no cover - compiled
    n_rows, n_items = bits.shape
    for row in range(n_rows):
        for code in range(n_items):
            keys[row, code] = _item_key(bits[row, code], eligible[row, code], code)


@njit(cache=True)
def _merge(tops, positions, n_retrievers, eligible, chosen):  # pragma: no cover - compiled
    n_lists, n_rows, depth = tops.shape
    n_items = eligible.shape[1]
    n_candidates = chosen.shape[1]
    merged = np.full(n_items, _NO_KEY, dtype=np.int64)
    touched = np.empty(n_lists * depth, dtype=np.int64)
    for row in range(n_rows):
        count = 0
        for which in range(n_lists):
            for position in range(depth):
                item = tops[which, row, position]
                if not eligible[row, item]:
                    continue
                key = (position + 1) * n_retrievers + positions[which]
                if merged[item] == _NO_KEY:
                    touched[count] = item
                    count += 1
                if key < merged[item]:
                    merged[item] = key
        order = np.empty(count, dtype=np.int64)  # merged key, then code
        for j in range(count):
            order[j] = merged[touched[j]] * n_items + touched[j]
            merged[touched[j]] = _NO_KEY
        order.sort()
        for j in range(min(count, n_candidates)):
            chosen[row, j] = order[j] % n_items


@njit(cache=True)
def _candidate_ranks(top, candidates, n_items, out):  # pragma: no cover - compiled
    n_rows, depth = top.shape
    rank = np.full(n_items, depth + 1, dtype=np.int64)
    for row in range(n_rows):
        for position in range(depth):
            rank[top[row, position]] = position + 1
        for j in range(candidates.shape[1]):
            out[row, j] = rank[max(candidates[row, j], 0)]
        for position in range(depth):
            rank[top[row, position]] = depth + 1
