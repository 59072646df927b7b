"""Deterministic top-k: highest score first, ties broken by the lower column index."""

from __future__ import annotations

import numpy as np

__all__ = ["top_k"]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row, best first, ties broken by lower column index.

    The result does not depend on how ``argpartition`` splits ties: rows with ties at the
    boundary (the k-th value occurs more than once) are re-ranked over every tied column.

    Args:
        scores: ``(n_rows, n_cols)`` array of finite values or ``-inf``; no NaN.
        k: ``1 <= k <= n_cols``.

    Returns:
        ``(indices, values)``, both ``(n_rows, k)``.
    """
    n_rows, n_cols = scores.shape
    if k == n_cols:
        candidates = np.broadcast_to(np.arange(n_cols), scores.shape).copy()
    else:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, candidates, axis=1)
    if k < n_cols and n_rows:
        kth = values.min(axis=1)
        tied = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k)
        for row in tied:
            columns = np.flatnonzero(scores[row] >= kth[row])
            order = np.lexsort((columns, -scores[row, columns]))[:k]
            candidates[row] = columns[order]
            values[row] = scores[row, candidates[row]]
    order = np.lexsort((candidates, -values), axis=-1)
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(values, order, axis=1)
