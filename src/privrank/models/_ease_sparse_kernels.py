r"""Compiled (numba) kernels of EASE on pruned neighbourhoods (:mod:`privrank.models.ease_sparse`).

Both kernels read a symmetric sparse Gram matrix :math:`G = X^\top X` in CSR form with sorted
column indices, and are parallel over target items (each target's work is independent, so the
results do not depend on the number of threads):

- :func:`top_neighbours`: for each item :math:`j`, the ``k`` items :math:`i \ne j` with the
  largest positive :math:`G_{ij}` (ties: the lower code first), ``-1`` padding when fewer
  co-occur;
- :func:`solve_neighbourhoods`: for each item, the dense neighbourhood block
  :math:`G_{N_j N_j} + \lambda I` and right-hand side :math:`G_{N_j j}`, each entry found by
  binary search in its row (:math:`O(k^2 \log \mathrm{nnz})`, whatever the rows' lengths),
  solved in float64 by a Cholesky decomposition (:math:`k^3/3` multiply-adds).

The solves run here rather than in a batched LAPACK call: each is small, and a multi-threaded
BLAS on ``k × k`` blocks is slower than one thread per block (thirty times slower for
``k ≥ 129`` on a loaded 2-core machine, measured).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["solve_neighbourhoods", "top_neighbours"]


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


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def solve_neighbourhoods(
    indptr, indices, data, neighbours, regularization, out, failures
):  # pragma: no cover - compiled
    r"""``out[j, :m] = (G_{NN} + \lambda I)^{-1} G_{N j}`` for every item ``j``, in float64.

    ``N`` is the ``m`` valid entries of ``neighbours[j]`` (``-1`` pads the tail; ``out`` is 0
    there). Each system is gathered by binary search, factorised by an in-place Cholesky
    decomposition and solved by two triangular substitutions. A system that is not positive
    definite sets ``failures[j] = 1`` and leaves ``out[j]`` at 0.
    """
    n, k = neighbours.shape
    for j in prange(n):
        m = 0
        while m < k and neighbours[j, m] >= 0:
            m += 1
        for p in range(k):
            out[j, p] = 0.0
        if m == 0:
            continue
        a = np.empty((m, m))
        b = np.empty(m)
        for p in range(m):
            row = neighbours[j, p]
            start, stop = indptr[row], indptr[row + 1]
            b[p] = _lookup(indices, data, start, stop, j)
            for q in range(p, m):
                value = _lookup(indices, data, start, stop, neighbours[j, q])
                a[p, q] = value
                a[q, p] = value
            a[p, p] += regularization
        # Cholesky, lower triangle in place: a = L Lᵀ.
        ok = True
        for c in range(m):
            pivot = a[c, c]
            for t in range(c):
                pivot -= a[c, t] * a[c, t]
            if not pivot > 0.0:  # also NaN
                ok = False
                break
            pivot = np.sqrt(pivot)
            a[c, c] = pivot
            for r in range(c + 1, m):
                value = a[r, c]
                for t in range(c):
                    value -= a[r, t] * a[c, t]
                a[r, c] = value / pivot
        if not ok:
            failures[j] = 1
            continue
        for r in range(m):  # L y = b
            value = b[r]
            for t in range(r):
                value -= a[r, t] * b[t]
            b[r] = value / a[r, r]
        for r in range(m - 1, -1, -1):  # Lᵀ x = y
            value = b[r]
            for t in range(r + 1, m):
                value -= a[t, r] * b[t]
            b[r] = value / a[r, r]
        for p in range(m):
            out[j, p] = b[p]
