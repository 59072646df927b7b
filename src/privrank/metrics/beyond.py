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
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "average_popularity",
    "catalog_coverage",
    "exposure_counts",
    "gini",
    "item_popularity",
    "list_means",
    "novelty",
    "self_information",
]


def item_popularity(indptr: np.ndarray, indices: np.ndarray, n_items: int) -> np.ndarray:
    """:math:`c_i`, distinct training users per item, from a duplicate-free training CSR."""
    del indptr  # a CSR without duplicates has one entry per (user, item)
    return np.bincount(indices, minlength=n_items).astype(np.int64)


def exposure_counts(top_items: np.ndarray, k: int, n_items: int) -> np.ndarray:
    """:math:`r_i`, how many top-``k`` lists contain each item (``int64 [n_items]``)."""
    items = np.asarray(top_items)[:, :k]
    return np.bincount(items[items >= 0], minlength=n_items).astype(np.int64)


def catalog_coverage(exposure: np.ndarray) -> float:
    """Share of the catalogue recommended at least once, from :func:`exposure_counts`."""
    return float(np.count_nonzero(exposure) / len(exposure)) if len(exposure) else 0.0


def gini(exposure: np.ndarray) -> float:
    """Gini coefficient of the exposure counts (``0.0`` when nothing was recommended)."""
    counts = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = len(counts), counts.sum()
    if n == 0 or total == 0:
        return 0.0
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    return float(weights @ counts / (n * total))


def list_means(
    top_items: np.ndarray, per_item: np.ndarray, cutoffs: tuple[int, ...]
) -> dict[int, np.ndarray]:
    """Per-user mean of ``per_item[i]`` over :math:`L_u@k`, for every cutoff ``k`` at once.

    Returns:
        ``k`` → ``float64 [users]``; NaN for users whose top-``k`` list is empty.
    """
    depth = max(cutoffs)
    items = np.asarray(top_items)[:, :depth]
    valid = items >= 0
    values = np.where(valid, np.asarray(per_item, dtype=np.float64)[np.maximum(items, 0)], 0.0)
    sums = np.cumsum(values, axis=1)
    lengths = np.cumsum(valid, axis=1)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in cutoffs:
            length = lengths[:, k - 1]
            out[k] = np.where(length > 0, sums[:, k - 1] / length, np.nan)
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
