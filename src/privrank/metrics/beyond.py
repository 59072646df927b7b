r"""Beyond-accuracy metrics: catalogue coverage, novelty, popularity bias and exposure inequality.

Notation: :math:`I` items; :math:`L_u@k` the non-padding items of user :math:`u`'s top-``k`` list
(padding ``-1`` entries are ignored everywhere); :math:`c_i` the popularity of item :math:`i` in
the *training* data, counted as the number of distinct training users who interacted with it;
:math:`N` the number of training users with at least one interaction;
:math:`r_i = |\{u : i \in L_u@k\}|` the number of lists item :math:`i` appears in.

* Catalogue coverage@k: :math:`|\bigcup_u L_u@k| / I`.
* Novelty@k (per user): mean self-information of the recommended items,
  :math:`\frac{1}{|L_u@k|} \sum_{i \in L_u@k} -\log_2 p_i` with
  :math:`p_i = \max(c_i, 1) / N` (an item no training user touched counts as touched once, so
  its self-information is the largest finite value, :math:`\log_2 N`).
* Average recommended popularity (ARP@k, per user): :math:`\frac{1}{|L_u@k|}
  \sum_{i \in L_u@k} c_i`.
* Gini@k of the exposure counts :math:`r_i` over all :math:`I` items (never-recommended items
  included, with :math:`r_i = 0`): with :math:`r_{(1)} \le \dots \le r_{(I)}` sorted,
  :math:`G = \sum_{j=1}^{I} (2j - I - 1)\, r_{(j)} / (I \sum_j r_j)`; 0 when every item is
  recommended equally often, :math:`1 - 1/I` when one item takes every slot.

Per-user values of users whose list is empty (they interacted with the whole catalogue) are NaN.

Lists of one shared order (a non-personalised model), held as its head plus the few rows that
differ (:class:`~privrank.metrics.shared.SharedLists`), are measured from the head once and the
differing rows alone (:func:`shared_list_means`, :func:`shared_exposure`): the same values as
the dense lists, at a cost proportional to the rows that differ.
"""

from __future__ import annotations

import numpy as np

from privrank.metrics.shared import SharedLists

__all__ = [
    "average_popularity",
    "catalog_coverage",
    "exposure_by_cutoff",
    "exposure_counts",
    "gini",
    "item_popularity",
    "list_means",
    "novelty",
    "self_information",
    "shared_exposure",
    "shared_list_means",
]

_EXACT = 1 << 53  # integers below this are exact float64 values


def item_popularity(indptr: np.ndarray, indices: np.ndarray, n_items: int) -> np.ndarray:
    """:math:`c_i`, distinct training users per item, from a duplicate-free training CSR."""
    del indptr  # a CSR without duplicates has one entry per (user, item)
    return np.bincount(indices, minlength=n_items).astype(np.int64)


def exposure_counts(top_items: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """:math:`r_i`, how many top-``k`` lists contain each item (``int64 [n_items]``)."""
    items = np.asarray(top_items)[:, :k]
    return np.bincount(items[items >= 0], minlength=n_items).astype(np.int64)


def exposure_by_cutoff(
    top_items: np.ndarray,
    cutoffs: tuple[int, ...],
    n_items: int,
    row_weights: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    r""":func:`exposure_counts` at every cutoff at once, cumulatively:
    :math:`r_i@k' = r_i@k + |\{u : i \in L_u[k:k']\}|` for :math:`k < k'`, so each list entry
    is counted once (integers: the same counts as one call per cutoff).

    Args:
        top_items: ``[rows, depth]`` lists (``-1`` pads).
        cutoffs: The ``k`` to count at.
        n_items: Catalogue size.
        row_weights: Non-negative integers: row ``u`` stands for ``row_weights[u]`` lists
            (default 1 each); counted exactly while the counts stay below :math:`2^{53}`.

    Returns:
        ``k`` → ``int64 [n_items]``.
    """
    items = np.asarray(top_items)
    counts = np.zeros(n_items, dtype=np.int64)
    out, done = {}, 0
    for k in sorted(cutoffs):
        block = items[:, done:k]
        valid = block >= 0
        if row_weights is None:
            counts = counts + np.bincount(block[valid], minlength=n_items)
        else:
            weights = np.broadcast_to(np.asarray(row_weights)[:, None], block.shape)[valid]
            added = np.bincount(block[valid], weights=weights, minlength=n_items)
            counts = counts + np.rint(added).astype(np.int64)
        out[k], done = counts, max(done, k)
    return out


def shared_exposure(
    lists: SharedLists, cutoffs: tuple[int, ...], n_items: int
) -> dict[int, np.ndarray]:
    r""":func:`exposure_by_cutoff` of lists that are mostly one head (:class:`SharedLists`):
    :math:`r_i@k = n_{same} \cdot [i \in head@k] + \sum_p m_p [i \in L_p@k]` over the
    lists :math:`L_p` of the changed rows' exclusion patterns, :math:`m_p` rows each."""
    head = exposure_by_cutoff(lists.head_items[None, :], cutoffs, n_items)
    changed = exposure_by_cutoff(lists.items, cutoffs, n_items, lists.multiplicity())
    return {k: lists.n_same * head[k] + changed[k] for k in head}


def catalog_coverage(exposure: np.ndarray) -> float:
    """Share of the catalogue recommended at least once, from :func:`exposure_counts`."""
    return float(np.count_nonzero(exposure) / len(exposure)) if len(exposure) else 0.0


def gini(exposure: np.ndarray) -> float:
    r"""Gini coefficient of the exposure counts (``0.0`` when nothing was recommended).

    Integer counts (what :func:`exposure_counts` returns) are computed exactly in integers:
    the :math:`z` zero counts take sorted places :math:`1..z` and add nothing, so only the
    non-zero counts are sorted, and :math:`\sum_j (2j - I - 1) r_{(j)}` is an exact integer,
    divided once by :math:`I \sum_j r_j`. While :math:`I \sum_j r_j < 2^{53}` the float
    formula's products and partial sums are exact integers too, so both give the same float;
    beyond that (and for float counts) the float formula is used.
    """
    counts = np.asarray(exposure)
    n = len(counts)
    if np.issubdtype(counts.dtype, np.integer):
        nonzero = np.sort(counts[counts != 0]).astype(np.int64)
        total = int(nonzero.sum())
        if not len(nonzero):
            return 0.0
        if nonzero[0] > 0 and n * total < _EXACT:
            places = np.arange(n - len(nonzero) + 1, n + 1, dtype=np.int64)
            return int(((2 * places - n - 1) * nonzero).sum()) / (n * total)
    counts = np.sort(counts.astype(np.float64))
    total = counts.sum()
    if n == 0 or total == 0:
        return 0.0
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    return float(weights @ counts / (n * total))


def list_means(
    top_items: np.ndarray, per_item: np.ndarray, cutoffs: tuple[int, ...]
) -> dict[int, np.ndarray]:
    r"""Per-user mean of ``per_item[i]`` over :math:`L_u@k`, for every cutoff ``k`` at once.

    The sum over a list is accumulated left to right, one list position at a time over all
    users (:math:`s_u@j = s_u@(j-1) + v_{u,j}`, a padding entry adding ``0.0``): the additions
    of a running sum along each row, in the same order, without a ``[users, k]`` matrix of
    running sums. The length of :math:`L_u@k` counts its non-padding entries.

    Returns:
        ``k`` → ``float64 [users]``; NaN for users whose top-``k`` list is empty.
    """
    depth = max(cutoffs)
    items = np.asarray(top_items)[:, :depth]
    width = items.shape[1]
    # Column j of the lists is row j of `columns`; padding (any negative code) reads the 0.0
    # appended to the table.
    columns = np.ascontiguousarray(items.T)
    table = np.append(np.asarray(per_item, dtype=np.float64), 0.0)
    padded = columns < 0
    has_padding = bool(padded.any())
    if has_padding:  # a new array: `columns` may be a view of the caller's lists
        columns = np.where(padded, len(table) - 1, columns)
        lengths = np.cumsum(~padded, axis=0)
    values = table[columns]
    out, sums = {}, values[0].copy() if width else np.zeros(items.shape[0])
    done = 1
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in sorted(cutoffs):
            for j in range(done, min(k, width)):
                sums += values[j]
            done = max(done, min(k, width))
            if has_padding:
                length = lengths[min(k, width) - 1]
                out[k] = np.where(length > 0, sums / length, np.nan)
            else:
                out[k] = sums / min(k, width) if width else np.full(len(sums), np.nan)
    return out


def shared_list_means(
    lists: SharedLists, per_item: np.ndarray, cutoffs: tuple[int, ...]
) -> dict[int, np.ndarray]:
    """:func:`list_means` of lists that are mostly one head (:class:`SharedLists`): the head's
    means once, written to every row, and :func:`list_means` of the changed rows' lists, one
    per exclusion pattern, written to their rows (each row's mean depends on its own list only,
    so the values are those of the dense lists)."""
    head = list_means(lists.head_items[None, :], per_item, cutoffs)
    distinct = list_means(lists.items, per_item, cutoffs)
    out = {}
    for k, value in head.items():
        out[k] = np.full(lists.n_rows, value[0])
        out[k][lists.changed] = distinct[k][lists.pattern]
    return out


def self_information(popularity: np.ndarray, n_users: int) -> np.ndarray:
    """:math:`-\\log_2 p_i` with :math:`p_i = \\max(c_i, 1) / N`, per item."""
    return -np.log2(np.maximum(popularity, 1) / max(n_users, 1))


def novelty(top_items: np.ndarray, k: int, popularity: np.ndarray, n_users: int) -> np.ndarray:
    """Per-user mean self-information :math:`-\\log_2 p_i` of the top ``k`` (NaN if empty)."""
    return list_means(top_items, self_information(popularity, n_users), (k,))[k]


def average_popularity(top_items: np.ndarray, k: int, popularity: np.ndarray) -> np.ndarray:
    """Per-user mean training popularity :math:`c_i` of the top ``k`` (NaN if empty)."""
    return list_means(top_items, popularity, (k,))[k]
