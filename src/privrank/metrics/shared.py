r"""Top-``k`` lists, and ranks in them, for scores that are one vector for every row (a
non-personalised model: most-popular and its private variants), without a score matrix.

The ranking rule is :mod:`privrank.metrics.topk`'s (score descending, lower item code first,
``-inf`` never recommended). The vector is ranked once (:func:`shared_order`); a row's list is
the order with the row's excluded items left out. :func:`shared_top_k` writes the lists out;
:func:`shared_lists` keeps them as the order's head plus the rows whose list differs from it,
one list per exclusion pattern (what the beyond-accuracy metrics read); :func:`shared_ranks`
gives the rank of given items in given rows' lists without building any list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privrank.errors import ConfigError, DataError
from privrank.metrics.topk import TopK, ragged_rows

__all__ = [
    "SharedLists",
    "SharedOrder",
    "shared_lists",
    "shared_order",
    "shared_ranks",
    "shared_top_k",
]

_PAIR_FACTOR = 4  # shared_ranks compares pairs directly up to this many per input entry


@dataclass(frozen=True)
class SharedOrder:
    """The catalogue ranked once, for scores that are the same for every row (a
    non-personalised model): the ranking rule applied to one vector.

    Attributes:
        items: ``int64`` item codes of every item scoring above ``-inf``, best first (ties:
            lower code first).
        scores: Their scores, in that order.
        position: ``int64 [n_items]``: each item's index in ``items``; ``len(items)`` for the
            items scored ``-inf`` (never recommended).
    """

    items: np.ndarray
    scores: np.ndarray
    position: np.ndarray


def shared_order(scores: np.ndarray) -> SharedOrder:
    """Rank one score vector by the module's rule (score descending, lower code first).

    Args:
        scores: ``[n_items]`` scores, the same for every row; ``-inf`` marks items never
            recommended.

    Raises:
        ConfigError: ``scores`` is not 1-D.
        DataError: A score is NaN.
    """
    vector = np.asarray(scores)
    if vector.ndim != 1:
        raise ConfigError(f"shared scores must be 1-D [items], got shape {vector.shape}")
    if vector.dtype not in (np.float32, np.float64):
        vector = vector.astype(np.float32 if vector.dtype == np.float16 else np.float64)
    if np.isnan(vector).any():
        bad = np.flatnonzero(np.isnan(vector))[:5].tolist()
        raise DataError("NaN scores", value=f"items {bad}", expected="numbers or -inf")
    finite = np.flatnonzero(vector > -np.inf)
    # -0.0 + 0.0 == 0.0; lexsort is stable: equal scores keep ascending item codes.
    ranked = finite[np.lexsort((finite, -(vector[finite] + 0.0)))]
    position = np.full(len(vector), len(ranked), dtype=np.int64)
    position[ranked] = np.arange(len(ranked), dtype=np.int64)
    return SharedOrder(items=ranked.astype(np.int64), scores=vector[ranked], position=position)


@dataclass(frozen=True)
class SharedLists:
    """The top-``k`` lists of rows that share one order, stored as the order's head, the rows
    whose list differs from it (every other row's list *is* the head), and one list per
    exclusion pattern of those rows (rows that leave out the same head items have the same
    list: it is stored once).

    Attributes:
        head_items: ``int64 [k]``: the order's first ``k`` items (``-1`` pads a short order).
        head_scores: ``[k]`` their scores (``-inf`` pads).
        changed: ``int64`` indices into the ranked ``rows``, ascending, of the rows whose list
            differs from the head (a row excluding one of the head's items); no duplicates.
        pattern: ``int64 [len(changed)]``: row ``changed[j]``'s list is ``items[pattern[j]]``.
        items: ``int64 [patterns, k]``: the lists of the changed rows' patterns, best first
            (two patterns may still give one list, e.g. both past the order's end).
        positions: ``int64 [patterns, k]``: those items' positions in the order, ascending
            along each row (``>= len(order.items)`` where the list is padded).
        scores: ``[patterns, k]``: their scores.
        n_rows: How many rows were ranked.
        order: The order the lists come from.
    """

    head_items: np.ndarray
    head_scores: np.ndarray
    changed: np.ndarray
    pattern: np.ndarray
    items: np.ndarray
    positions: np.ndarray
    scores: np.ndarray
    n_rows: int
    order: SharedOrder

    @property
    def n_same(self) -> int:
        """Rows whose list is the head."""
        return self.n_rows - len(self.changed)

    def multiplicity(self) -> np.ndarray:
        """``int64 [patterns]``: how many changed rows have each pattern's list."""
        return np.bincount(self.pattern, minlength=len(self.items)).astype(np.int64)

    def ranks(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The rank of ``items[j]`` in the list of row ``rows[j]`` (an index into the ranked
        rows), or ``-1`` when it is not in that list.

        A row whose list is the head excludes none of the head's items, so an item's rank there
        is its position in the order when that is below ``k``; a changed row's item is looked up
        in its pattern's list: a binary search of its position among the patterns' positions,
        laid end to end (row ``p`` offset by ``p · (len(order.items) + 1)``, so the whole is
        ascending). Within the lists' length these are the ranks of :func:`shared_ranks`
        (which also ranks items beyond it). ``O(queries · log(patterns · k) + patterns · k)``.
        """
        rows = np.asarray(rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        k, n_ranked = len(self.head_items), len(self.order.items)
        position = self.order.position[items]
        ranks = np.where(position < min(k, n_ranked), position, -1)
        of_row = np.full(self.n_rows, -1, dtype=np.int64)
        of_row[self.changed] = self.pattern
        which = of_row[rows]
        inside = np.flatnonzero((which >= 0) & (position < n_ranked))
        ranks[which >= 0] = -1
        if len(inside) and self.positions.size:
            span = n_ranked + 1
            offsets = span * np.arange(len(self.positions), dtype=np.int64)
            laid = (np.minimum(self.positions, n_ranked) + offsets[:, None]).ravel()
            wanted = which[inside] * span + position[inside]
            at = np.minimum(np.searchsorted(laid, wanted), len(laid) - 1)
            hit = laid[at] == wanted
            ranks[inside[hit]] = at[hit] - which[inside[hit]] * k
        return ranks

    def dense(self) -> TopK:
        """Every row's list: ``[n_rows, k]`` (what :func:`shared_top_k` returns)."""
        items = np.empty((self.n_rows, len(self.head_items)), dtype=np.int64)
        values = np.empty(items.shape, dtype=self.head_scores.dtype)
        items[:], values[:] = self.head_items, self.head_scores
        items[self.changed] = self.items[self.pattern]
        values[self.changed] = self.scores[self.pattern]
        return TopK(items, values)


def shared_top_k(
    order: SharedOrder,
    k: int,
    excluded_indptr: np.ndarray,
    excluded_indices: np.ndarray,
    rows: np.ndarray,
) -> TopK:
    r"""Top-``k`` of rows that all score items by one vector, each row's excluded items left out.

    Equal to masking each row's excluded items to ``-inf`` in a ``[rows, n_items]`` copy of
    the vector and calling :func:`top_k` (same lists, same padding), without building the
    matrix: ``O(k · rows + excluded entries)`` instead of ``O(rows · n_items)``. The lists of
    :func:`shared_lists`, written out row by row.

    Args:
        order: The ranked vector (:func:`shared_order`).
        k: List length, ``k >= 1``.
        excluded_indptr: CSR row pointer of the items to leave out, per row number.
        excluded_indices: Their item codes (each at most once per row).
        rows: Row numbers (into the CSR structure) to rank.

    Returns:
        The lists, padded with ``-1`` / ``-inf`` where fewer than ``k`` items remain.
    """
    return shared_lists(order, k, excluded_indptr, excluded_indices, rows).dense()


def shared_lists(
    order: SharedOrder,
    k: int,
    excluded_indptr: np.ndarray,
    excluded_indices: np.ndarray,
    rows: np.ndarray,
) -> SharedLists:
    r"""The lists of :func:`shared_top_k` as the order's head plus the rows that differ from it.

    ``O(excluded entries + k · changed rows)``: a row's list differs from the head exactly when
    the row excludes one of the head's items, and only those rows are computed.

    For one row, let :math:`s_0 < s_1 < \dots` be the positions in ``order.items`` of its
    excluded items. The row's ``j``-th list entry (``j = 0, 1, …``) is the ``j``-th position
    that is not excluded,

    .. math:: f_j = j + |\{i : s_i - i \le j\}|,

    since :math:`s_i - i` counts the free positions before :math:`s_i`, and :math:`s_i < f_j`
    holds exactly when at most ``j`` free positions precede :math:`s_i`. Only excluded items
    with :math:`s_i - i < k` matter, and those have :math:`s_i < k + m` for a row with ``m``
    excluded items (a cut that keeps a prefix of each row's sorted positions). A row has such
    an item exactly when :math:`s_0 < k` (as :math:`s_i - i \ge s_0`), i.e. when its list is
    not the head.

    Args:
        order: The ranked vector (:func:`shared_order`).
        k: List length, ``k >= 1``.
        excluded_indptr: CSR row pointer of the items to leave out, per row number.
        excluded_indices: Their item codes (each at most once per row).
        rows: Row numbers (into the CSR structure) to rank (any order, repeats allowed).

    Returns:
        The head, the changed rows and their lists (padded with ``-1`` / ``-inf`` where fewer
        than ``k`` items remain).

    Raises:
        ConfigError: ``k < 1``.
    """
    if k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k}")
    rows = np.asarray(rows, dtype=np.int64)
    n_rows, n_ranked = len(rows), len(order.items)
    offsets, entry_items = _ragged_items(excluded_indptr, excluded_indices, rows)
    per_row = np.diff(offsets)
    # An entry matters only below position k + (its row's length): first the entries below
    # k + (the longest row's length), a cheap filter, then the exact bound on those few.
    ranks = order.position[entry_items]
    near = np.flatnonzero(ranks < min(k + int(per_row.max(initial=0)), n_ranked))
    entry_row = np.searchsorted(offsets, near, side="right") - 1
    ranks = ranks[near]
    keep = ranks < k + per_row[entry_row]
    # Entries are grouped by row in ascending order, so one sort of the packed key
    # (row, rank) of the few kept entries orders each row's ranks.
    packed = np.sort(entry_row[keep] * max(n_ranked, 1) + ranks[keep])
    entry_row, ranks = packed // max(n_ranked, 1), packed % max(n_ranked, 1)
    first = np.ones(len(entry_row), dtype=bool)
    first[1:] = entry_row[1:] != entry_row[:-1]
    run = np.cumsum(first) - 1  # which row run each entry is in
    within = np.arange(len(ranks)) - np.flatnonzero(first)[run]
    free_before = ranks - within
    useful = free_before < k
    hit_rows, free_before = entry_row[useful], free_before[useful]
    head = np.arange(k, dtype=np.int64)
    head_items, head_scores = _entries_at(order, head)
    changed = np.ones(len(hit_rows), dtype=bool)
    changed[1:] = hit_rows[1:] != hit_rows[:-1]
    affected = hit_rows[changed]
    # A changed row's list is a function of its (non-decreasing) free_before values alone:
    # rows with equal sequences share one list, computed once.
    pattern, chosen = _distinct_sequences(changed, free_before, within[useful], k)
    n_patterns = int(pattern.max()) + 1 if len(pattern) else 0
    counts = np.bincount(
        pattern[np.cumsum(changed)[chosen] - 1] * k + free_before[chosen],
        minlength=n_patterns * k,
    )
    # Row-wise running counts from one flat running sum, less each row's start.
    running = np.cumsum(counts).reshape(n_patterns, k)
    positions = head + running - (running[:, :1] - counts.reshape(n_patterns, k)[:, :1])
    items, values = _entries_at(order, positions)
    return SharedLists(
        head_items=head_items,
        head_scores=head_scores,
        changed=affected,
        pattern=pattern,
        items=items,
        positions=positions,
        scores=values,
        n_rows=n_rows,
        order=order,
    )


def _distinct_sequences(
    first: np.ndarray, values: np.ndarray, within: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct runs of a run-grouped sequence of integers in ``[0, k)``.

    Args:
        first: Where each run starts (``True`` at its first entry); runs are never empty.
        values: The entries, each in ``[0, k)``.
        within: Each entry's index within its run.
        k: The bound on the values.

    Returns:
        ``(pattern, chosen)``: ``pattern[r]`` numbers run ``r``'s sequence (equal sequences,
        equal numbers: ``0 … patterns - 1`` in order of their first run); ``chosen`` marks the
        entries of each pattern's first run.
    """
    n_runs = int(np.count_nonzero(first))
    if not n_runs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    # The key of a run is its sequence as digits value + 1 in base k + 1 (distinct lengths give
    # distinct keys); runs too long for 62 bits get keys of their own (negative, never shared).
    base = k + 1
    digits = 1
    while base ** (digits + 1) <= 1 << 62:
        digits += 1
    run = np.cumsum(first) - 1
    short = within < digits
    terms = np.zeros(len(values), dtype=np.int64)
    terms[short] = (values[short] + 1) * np.power(base, within[short], dtype=np.int64)
    keys = np.add.reduceat(terms, np.flatnonzero(first))
    long_runs = np.unique(run[~short])
    keys[long_runs] = -1 - long_runs
    by_key = np.argsort(keys, kind="stable")
    ordered = keys[by_key]
    new = np.ones(n_runs, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    start = by_key[new]  # each key's first run (the sort is stable)
    # Number the patterns in order of their first run.
    renumber = np.empty(len(start), dtype=np.int64)
    renumber[np.argsort(start)] = np.arange(len(start), dtype=np.int64)
    pattern = np.empty(n_runs, dtype=np.int64)
    pattern[by_key] = renumber[np.cumsum(new) - 1]
    leader = np.zeros(n_runs, dtype=bool)
    leader[start] = True
    return pattern, leader[run]


def shared_ranks(
    order: SharedOrder,
    excluded_indptr: np.ndarray,
    excluded_indices: np.ndarray,
    rows: np.ndarray,
    items: np.ndarray,
) -> np.ndarray:
    r"""The rank of ``items[j]`` in row ``rows[j]``'s list of :func:`shared_top_k` (any ``k``).

    A row's list is the order with the row's excluded items left out, so an item at position
    :math:`p` of ``order.items`` that the row does not exclude has the 0-based rank

    .. math:: r = p - |\{e \in E_{row} : p_e < p\}|

    (every excluded item ranked above it moves it up by one). ``O(queries + excluded entries
    of their rows)`` when each row has few queries (leave-one-out: one); with many queries per
    row, the rows' excluded positions are sorted once and each query is a binary search.

    Args:
        order: The ranked vector (:func:`shared_order`).
        excluded_indptr: CSR row pointer of the items to leave out, per row number.
        excluded_indices: Their item codes (each at most once per row).
        rows: The row number of each query, ascending.
        items: The item code of each query.

    Returns:
        ``int64`` ranks; ``-1`` where the item is excluded for that row or scores ``-inf``
        (it is in no list).

    Raises:
        DataError: ``rows`` is not sorted ascending.
    """
    rows = np.asarray(rows, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if np.any(rows[1:] < rows[:-1]):
        raise DataError("shared_ranks needs its query rows sorted ascending")
    n_ranked = len(order.items)
    position = order.position[items]
    distinct = np.ones(len(rows), dtype=bool)
    distinct[1:] = rows[1:] != rows[:-1]
    unique_rows = rows[distinct]
    lengths = (excluded_indptr[unique_rows + 1] - excluded_indptr[unique_rows]).astype(np.int64)
    per_query = lengths[np.cumsum(distinct) - 1]
    if int(per_query.sum()) <= _PAIR_FACTOR * (int(lengths.sum()) + len(rows)):
        # Few queries per row: compare each query with its row's excluded items.
        query, excluded, _ = ragged_rows(excluded_indptr, excluded_indices, rows)
        above = order.position[excluded] < position[query]
        below = np.bincount(query[above], minlength=len(rows))
        hidden = np.zeros(len(rows), dtype=bool)
        hidden[query[excluded == items[query]]] = True
    else:
        # Many: sort each row's excluded positions once (packed keys), binary-search each query.
        span = n_ranked + 1
        which, excluded, _ = ragged_rows(excluded_indptr, excluded_indices, unique_rows)
        keys = np.sort(which * span + order.position[excluded])
        starts = np.cumsum(lengths) - lengths
        slot = np.cumsum(distinct) - 1
        wanted = slot * span + position
        found = np.searchsorted(keys, wanted)
        below = found - starts[slot]
        hidden = np.zeros(len(rows), dtype=bool)
        if len(keys):
            hidden = keys[np.minimum(found, len(keys) - 1)] == wanted
    ranks = position - below
    ranks[hidden | (position >= n_ranked)] = -1
    return ranks


def _entries_at(order: SharedOrder, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items and scores at ``positions`` of the order; ``-1`` / ``-inf`` past its end."""
    n_ranked = len(order.items)
    if not n_ranked:
        return (
            np.full(positions.shape, -1, dtype=np.int64),
            np.full(positions.shape, -np.inf, dtype=order.scores.dtype),
        )
    if positions.size and int(positions.max()) < n_ranked:
        return order.items[positions], order.scores[positions]
    inside = positions < n_ranked
    clipped = np.minimum(positions, n_ranked - 1)
    items = np.where(inside, order.items[clipped], -1)
    values = np.where(inside, order.scores[clipped], -np.inf).astype(order.scores.dtype)
    return items, values


def _ragged_items(
    indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The entries of selected CSR rows, flattened, with their row offsets (no per-entry row
    numbers): ``(offsets, column)``, row ``rows[j]``'s entries at ``offsets[j]:offsets[j + 1]``.
    A run of consecutive rows is one slice."""
    n = len(rows)
    if n and rows[-1] - rows[0] == n - 1 and bool(np.all(rows[1:] - rows[:-1] == 1)):
        bounds = indptr[rows[0] : rows[-1] + 2].astype(np.int64)
        return bounds - bounds[0], indices[bounds[0] : bounds[-1]]
    starts = indptr[rows].astype(np.int64)
    lengths = indptr[rows + 1].astype(np.int64) - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1] - starts, lengths)
    return offsets, indices[flat]
