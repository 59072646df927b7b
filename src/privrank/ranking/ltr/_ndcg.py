r"""NDCG@k over query groups, as LightGBM's ``ndcg`` metric defines it.

For a group with labels :math:`l` ordered by descending score (ties kept in row order),

.. math:: \mathrm{DCG@k} = \sum_{r=1}^{\min(k, n)} \frac{2^{l_{(r)}} - 1}{\log_2(r + 1)},
          \qquad \mathrm{NDCG@k} = \mathrm{DCG@k} / \mathrm{IDCG@k}

with :math:`\mathrm{IDCG@k}` the DCG of the labels sorted in descending order. A group without a
relevant row (IDCG 0) counts as 1, as in LightGBM; the result is the mean over groups.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_ndcg", "per_group_ndcg"]


def per_group_ndcg(
    scores: np.ndarray, labels: np.ndarray, group_sizes: np.ndarray, k: int
) -> np.ndarray:
    """NDCG@k of every group (float64, one per group)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    offsets = np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    out = np.empty(len(group_sizes), dtype=np.float64)
    for g in range(len(group_sizes)):
        lab = labels[offsets[g] : offsets[g + 1]]
        gains = np.exp2(lab) - 1.0
        ideal = np.sort(gains)[::-1][:k]
        idcg = float(ideal @ discounts[: ideal.size])
        if idcg <= 0.0:
            out[g] = 1.0
            continue
        order = np.argsort(-scores[offsets[g] : offsets[g + 1]], kind="stable")[:k]
        out[g] = float(gains[order] @ discounts[: order.size]) / idcg
    return out


def group_ndcg(scores: np.ndarray, labels: np.ndarray, group_sizes: np.ndarray, k: int) -> float:
    """Mean NDCG@k over the groups (see the module docstring)."""
    return float(per_group_ndcg(scores, labels, group_sizes, k).mean())
