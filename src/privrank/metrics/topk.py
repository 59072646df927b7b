"""Exact, deterministic top-k over the full catalogue, one batch of users at a time.

Ranking rule (used by every metric in privrank): items are ordered by score, highest first;
**equal scores are ordered by the lower item code first** (``-0.0`` equals ``0.0``). Items
scored ``-inf`` (which is what exclusion writes for a user's training items) are never
recommended: when fewer than ``k`` items score above ``-inf`` the list is padded with item ``-1``
and score ``-inf``. ``NaN`` scores are an error. The result is a function of the scores alone,
independent of batch size, thread count or how a selection algorithm visits ties.

Algorithm (exact; one pass over the score matrix plus work on a few candidates per row). The
``n`` columns are cut into ``g`` strided slabs of ``m = n // g`` columns, so group ``j`` holds
items ``{j, j + m, ..., j + (g - 1) m}``. Let ``G[u, j]`` be the largest score in group ``j``
and ``t_u`` the ``k``-th largest of ``G[u, :]`` (or, when ``m`` is large, of the maxima of
coarser groups of groups: a slightly lower value that is cheaper to find). The ``k`` (coarse)
groups achieving it hold ``k`` distinct items scoring ``>= t_u``, so the ``k``-th best score of
the row is ``>= t_u``: every
item of the top ``k`` (boundary ties included) scores ``>= t_u`` and lies either in a group
with ``G[u, j] >= t_u`` or among the ``n - g m`` leftover columns. These candidates (about
``k`` groups of ``g`` items per row when scores are untied) are gathered, filtered to scores
``>= t_u`` and sorted exactly by (score descending, item code ascending). Working memory beyond
the score matrix is the ``rows * m`` group maxima plus the candidates; rows with very many tied
candidates (a constant scorer, say) are processed in sub-batches so that the candidate arrays
hold at most :data:`MAX_CANDIDATES` entries. Rows are processed in blocks of up to 128 (so a
block stays in cache between its passes) on a small thread pool (numpy releases the GIL in
these loops).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from privrank.errors import ConfigError, DataError

if TYPE_CHECKING:  # imported on use: a score array need not come from torch
    import torch

__all__ = [
    "MAX_CANDIDATES",
    "TopK",
    "as_score_array",
    "mask_items",
    "ragged_rows",
    "top_k",
]

#: Upper bound on gathered candidate entries per sub-batch (bounds the top-k working memory).
MAX_CANDIDATES = 1 << 23
_MAX_GROUP = 16  # items per group: cheap group maxima, few candidates
_MAX_COARSE = 8  # groups per coarse group when choosing the threshold
_ROW_BLOCK = 128  # rows per unit of work
_CACHE_ENTRIES = 1 << 22  # at most this many scores per unit of work (16 MB of float32)


@dataclass(frozen=True)
class TopK:
    """The top-``k`` lists of a batch of rows.

    Attributes:
        items: ``int64 [rows, k]`` item codes, best first; ``-1`` pads short lists.
        scores: ``[rows, k]`` scores of those items (``float32`` or ``float64``); ``-inf`` pads.
    """

    items: np.ndarray
    scores: np.ndarray


def as_score_array(scores: np.ndarray | torch.Tensor, *, copy: bool = False) -> np.ndarray:
    """A C-contiguous, writeable ``float32``/``float64`` numpy view of a score matrix.

    Torch tensors are moved to the CPU (sharing memory when already there). ``float16`` and
    ``bfloat16`` become ``float32``, integers and bools ``float64`` (exact up to 2**53).
    Read-only or non-contiguous inputs (``np.broadcast_to``, ``Tensor.expand``) are copied;
    anything else is shared, i.e. the caller hands the array over, unless ``copy`` is set.

    Args:
        scores: ``[rows, n_items]`` scores.
        copy: Always return a new array.

    Returns:
        The score matrix.

    Raises:
        ConfigError: Not a 2-D numpy array or torch tensor.
    """
    torch = sys.modules.get("torch")  # a tensor implies torch was imported
    if torch is not None and isinstance(scores, torch.Tensor):
        tensor = scores.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.to(torch.float32)
        array = tensor.cpu().numpy()
    elif isinstance(scores, np.ndarray):
        array = scores
    else:
        raise ConfigError(
            f"scores must be a numpy array or a torch tensor, got {type(scores).__name__}"
        )
    if array.ndim != 2:
        raise ConfigError(f"scores must be 2-D [users, items], got shape {array.shape}")
    if array.dtype not in (np.float32, np.float64):
        target = np.float32 if array.dtype == np.float16 else np.float64
        return np.ascontiguousarray(array, dtype=target)
    if copy or not array.flags.writeable or not array.flags.c_contiguous:
        return np.array(array, order="C", copy=True)
    return array


def ragged_rows(
    indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray, data: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The entries of selected CSR rows, flattened.

    Args:
        indptr: CSR row pointer.
        indices: CSR column indices.
        rows: Row numbers to take (any order, repeats allowed).
        data: Optional CSR values to take along.

    Returns:
        ``(position, column, value)``: ``position[e]`` is the index into ``rows`` that entry
        ``e`` belongs to; entries keep their CSR order within each row.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if n and rows[-1] - rows[0] == n - 1 and bool(np.all(rows[1:] - rows[:-1] == 1)):
        # A run of consecutive rows (an evaluator's batch of users): one slice, no gather.
        first, last = int(indptr[rows[0]]), int(indptr[rows[-1] + 1])
        lengths = np.diff(indptr[rows[0] : rows[-1] + 2]).astype(np.int64)
        position = np.repeat(np.arange(n, dtype=np.int64), lengths)
        return position, indices[first:last], None if data is None else data[first:last]
    starts = indptr[rows].astype(np.int64)
    lengths = indptr[rows + 1].astype(np.int64) - starts
    position = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths
    flat = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(offsets - starts, lengths)
    return position, indices[flat], None if data is None else data[flat]


def mask_items(scores: np.ndarray, rows: np.ndarray, items: np.ndarray) -> None:
    """Set ``scores[rows[e], items[e]] = -inf`` for every entry ``e``, in place."""
    if len(rows):
        np.put(scores, np.asarray(rows, np.int64) * scores.shape[1] + items, -np.inf)


def top_k(scores: np.ndarray | torch.Tensor, k: int, *, threads: int | None = None) -> TopK:
    """Exact top-``k`` of every row under the module's ranking rule.

    Args:
        scores: ``[rows, n_items]`` scores; ``-inf`` marks items that must not be recommended.
        k: List length, ``k >= 1`` (may exceed ``n_items``: the lists are then padded).
        threads: Worker threads over row blocks (default: ``torch.get_num_threads()``).

    Returns:
        The lists and their scores.

    Raises:
        DataError: A score is NaN.
        ConfigError: ``k < 1`` or ``scores`` is not a 2-D array.
    """
    if k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k}")
    array = as_score_array(scores)
    n_rows = array.shape[0]
    items = np.full((n_rows, k), -1, dtype=np.int64)
    values = np.full((n_rows, k), -np.inf, dtype=array.dtype)
    if n_rows == 0 or array.shape[1] == 0:
        return TopK(items, values)
    # Blocks of rows small enough to stay in cache between the passes over them.
    row_block = max(1, min(_ROW_BLOCK, _CACHE_ENTRIES // array.shape[1]))
    starts = range(0, n_rows, row_block)
    blocks = [
        (array[a : a + row_block], items[a : a + row_block], values[a : a + row_block])
        for a in starts
    ]
    if not threads:
        import torch

        threads = torch.get_num_threads()
    workers = min(threads, len(blocks))
    if workers <= 1:
        for block in blocks:
            _top_k_block(*block)
    else:
        for future in [_pool(workers).submit(_top_k_block, *block) for block in blocks]:
            future.result()
    return TopK(items, values)


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="privrank-topk")


def _top_k_block(scores: np.ndarray, out_items: np.ndarray, out_values: np.ndarray) -> None:
    n_rows, n_items = scores.shape
    k = out_items.shape[1]
    group = max(1, min(_MAX_GROUP, n_items // (2 * k)))
    width = n_items // group
    if group > 1:
        group_max = scores[:, : group * width].reshape(n_rows, group, width).max(axis=1)
    else:
        group_max = scores
    nan_rows = np.isnan(group_max).any(axis=1)  # max propagates NaN, so this sees every NaN
    if group * width < n_items:
        nan_rows |= np.isnan(scores[:, group * width :]).any(axis=1)
    if nan_rows.any():
        bad = np.flatnonzero(nan_rows)[:5].tolist()
        raise DataError("NaN scores", value=f"batch rows {bad}", expected="numbers or -inf")
    threshold = _threshold(group_max, k)
    # Items at -inf are never recommended: lift the threshold to the lowest finite value.
    threshold[threshold == -np.inf] = np.finfo(scores.dtype).min
    chosen = np.flatnonzero(group_max >= threshold[:, None])
    chosen_rows = chosen // width
    chosen_base = chosen_rows * n_items + (chosen - chosen_rows * width)
    slabs = np.arange(0, group * width, width)
    leftover = np.arange(group * width, n_items)
    per_row = np.bincount(chosen_rows, minlength=n_rows) * group + len(leftover)
    cuts = np.searchsorted(chosen_rows, np.arange(n_rows + 1))
    for start, stop in _sub_batches(per_row):
        # Flat positions of every member of the chosen groups, then of the leftover columns.
        part = slice(cuts[start], cuts[stop])
        members = chosen_base[part, None] + slabs
        vals = np.take(scores, members)
        flat = members[vals >= threshold[chosen_rows[part], None]]
        if len(leftover):
            extra = (np.arange(start, stop) * n_items)[:, None] + leftover
            extra_vals = np.take(scores, extra)
            flat = np.concatenate([flat, extra[extra_vals >= threshold[start:stop, None]]])
        rows = flat // n_items
        cols = flat - rows * n_items
        vals = np.take(scores, flat)
        order = _rank_order(rows - start, cols, vals, stop - start, n_items)
        rows, cols, vals = rows[order], cols[order], vals[order]
        position = np.arange(len(rows)) - np.searchsorted(rows, rows)
        keep = position < k
        out_items[rows[keep], position[keep]] = cols[keep]
        out_values[rows[keep], position[keep]] = vals[keep]


def _threshold(group_max: np.ndarray, k: int) -> np.ndarray:
    """A lower bound on each row's ``k``-th largest score: the ``k``-th largest of some maxima.

    The maxima are those of ``group_max`` itself, or, when it is wide, of coarser groups of its
    columns (each coarse maximum is still the score of a distinct item), which makes the
    partition cheaper for a slightly lower bound. With fewer than ``k`` groups (only when
    ``n_items < k``) the bound is ``-inf``: every finite item is a candidate.
    """
    n_rows, width = group_max.shape
    if width < k:
        return np.full(n_rows, -np.inf, dtype=group_max.dtype)
    coarse = max(1, min(_MAX_COARSE, width // (4 * k)))
    if coarse > 1:
        narrow = width // coarse
        group_max = group_max[:, : coarse * narrow].reshape(n_rows, coarse, narrow).max(axis=1)
        width = narrow
    return np.partition(group_max, width - k, axis=1)[:, width - k].copy()


def _rank_order(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, n_items: int):
    """Permutation sorting entries by (row asc, score desc, item code asc)."""
    row_bits = max(1, int(n_rows - 1).bit_length())
    col_bits = max(1, int(n_items - 1).bit_length())
    if vals.dtype == np.float32 and row_bits + 32 + col_bits <= 64:
        # Order-preserving map of float32 to uint32 (after -0.0 -> 0.0), then one packed sort.
        bits = (vals + np.float32(0.0)).view(np.uint32).astype(np.uint64)
        negative = (bits >> np.uint64(31)).astype(bool)
        ordered = np.where(negative, ~bits & np.uint64(0xFFFFFFFF), bits | np.uint64(1 << 31))
        descending = np.uint64(0xFFFFFFFF) - ordered
        key = (
            (rows.astype(np.uint64) << np.uint64(32 + col_bits))
            | (descending << np.uint64(col_bits))
            | cols.astype(np.uint64)
        )
        return np.argsort(key, kind="stable")
    return np.lexsort((cols, -vals, rows))


def _sub_batches(per_row: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive row ranges whose candidate counts sum to at most :data:`MAX_CANDIDATES`."""
    if int(per_row.sum()) <= MAX_CANDIDATES:
        return [(0, len(per_row))]
    bounds, start, total = [], 0, 0
    for row, count in enumerate(per_row.tolist()):
        if total and total + count > MAX_CANDIDATES:
            bounds.append((start, row))
            start, total = row, 0
        total += count
    bounds.append((start, len(per_row)))
    return bounds
