r"""Compiled (numba) kernels of EASE on pruned neighbourhoods (:mod:`privrank.models.ease_sparse`).

Both kernels read a symmetric sparse Gram matrix :math:`G = X^\top X` in CSR form with sorted
column indices, and are parallel over target items (each target's work is independent, so the
results do not depend on the number of threads):

- :func:`top_neighbours`: for each item :math:`j`, the ``k`` items :math:`i \ne j` with the
  largest positive :math:`G_{ij}` (ties: the lower code first), ``-1`` padding when fewer
  co-occur;
- :func:`gather_systems`: for a batch of targets, the dense neighbourhood blocks
  :math:`G_{N_j N_j}` and right-hand sides :math:`G_{N_j j}`, each entry found by binary search
  in its row (:math:`O(k^2 \log \mathrm{nnz})` per target, whatever the rows' lengths).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["gather_systems", "top_neighbours"]


@njit(cache=True, inline="always")
def _lookup(indices, data, start, stop, column):  # pragma: no cover - compiled
    """``G[row, column]`` for the row stored in ``indices/data[start:stop]`` (0 when absent)."""
    lo, hi = start, stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < column:
            lo = mid + 1
        else:
            hi = mid
    if lo < stop and indices[lo] == column:
        return data[lo]
    return 0.0


@njit(parallel=True, cache=True)
def top_neighbours(indptr, indices, data, k, out):  # pragma: no cover - compiled
    """Fill ``out[j, :]`` (int32, ``n × k``) with the neighbourhood of item ``j``.

    The ``k`` columns ``i != j`` of row ``j`` with the largest positive values, largest first
    (a stable sort over sorted indices: ties keep the lower code first); ``-1`` pads the rest.
    """
    n = indptr.shape[0] - 1
    for j in prange(n):
        start, stop = indptr[j], indptr[j + 1]
        columns = indices[start:stop]
        values = data[start:stop]
        keep = (values > 0) & (columns != j)
        columns = columns[keep]
        values = values[keep]
        order = np.argsort(-values, kind="mergesort")
        taken = min(k, order.shape[0])
        for p in range(taken):
            out[j, p] = columns[order[p]]
        for p in range(taken, k):
            out[j, p] = -1


@njit(parallel=True, cache=True)
def gather_systems(
    indptr, indices, data, neighbours, targets, regularization, systems, rhs
):  # pragma: no cover - compiled
    r"""Fill ``systems[t] = G_{NN} + \lambda I`` and ``rhs[t] = G_{N j}`` for ``j = targets[t]``.

    ``N = neighbours[j]``; a padded slot (``-1``) gets the identity row and column and a zero
    right-hand side, so its solution is 0 and it couples to nothing.
    """
    k = neighbours.shape[1]
    for t in prange(targets.shape[0]):
        j = targets[t]
        for p in range(k):
            a = neighbours[j, p]
            if a < 0:
                for q in range(k):
                    systems[t, p, q] = 0.0
                    systems[t, q, p] = 0.0
                systems[t, p, p] = 1.0
                rhs[t, p] = 0.0
                continue
            start, stop = indptr[a], indptr[a + 1]
            rhs[t, p] = _lookup(indices, data, start, stop, j)
            for q in range(p, k):
                b = neighbours[j, q]
                if b < 0:
                    continue
                value = _lookup(indices, data, start, stop, b)
                systems[t, p, q] = value
                systems[t, q, p] = value
            systems[t, p, p] += regularization
