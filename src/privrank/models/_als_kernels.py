"""Compiled (numba) row solvers of implicit ALS, parallel over rows.

For every row :math:`r` of a sparse binary matrix (a user's items, or an item's users), with
:math:`Y` the fixed factors of the other side, :math:`G = Y^\\top Y` and :math:`I_r` the columns
of the row, each kernel works on the normal equations

.. math:: A_r w = b_r, \\qquad A_r = \\alpha_0 G + \\lambda_r I + Y_{I_r}^\\top Y_{I_r},
   \\qquad b_r = Y_{I_r}^\\top \\mathbf 1,

whose solution minimises :math:`\\lVert Y_{I_r} w - 1\\rVert^2 + \\alpha_0 w^\\top G w +
\\lambda_r\\lVert w\\rVert^2`. :math:`A_r` is never formed by the conjugate-gradient kernel:
:math:`A_r v = (\\alpha_0 G + \\lambda_r I) v + \\sum_{i\\in I_r} (y_i^\\top v)\\, y_i` costs
:math:`O(d^2 + |I_r| d)`, with :math:`G` computed once per half-step (the Gramian trick of
Hu, Koren and Volinsky 2008). Rows with no entries get :math:`w = 0`, the exact minimiser.

Rows are independent, so results do not depend on the number of threads. Factors are float32;
dot products are accumulated in float32 with re-association allowed (so they vectorise), and
the conjugate-gradient scalars in float64.
"""

from __future__ import annotations

import numba
import numpy as np

# numba's np.dot calls scipy's BLAS: load it now, so that threadpoolctl (which only sees the
# libraries already loaded) can keep it single-threaded inside the parallel kernels.
import scipy.linalg.cython_blas  # noqa: F401
import threadpoolctl
from numba import njit, prange

__all__ = ["cg_rows", "exact_rows", "row_losses", "run_parallel"]

# Re-association lets LLVM vectorise the float32 dot products; NaN/inf semantics are kept (no
# 'nnan'/'ninf'), so a diverging fit is still detected.
_FASTMATH = {"reassoc", "contract"}
# Rows per scheduling chunk: rows vary in length by orders of magnitude (power laws), so they
# are handed out dynamically in small chunks rather than split evenly up front.
_CHUNK = 16
# Gathered rows per BLAS product in the exact solve (128 × 128 float32 = 64 KiB).
_BLOCK = 128


@njit(fastmath=_FASTMATH, inline="always")
def _dot(a, b):  # pragma: no cover - compiled
    total = np.float32(0.0)
    for k in range(a.shape[0]):
        total += a[k] * b[k]
    return total


@njit(fastmath=_FASTMATH, inline="always")
def _base_product(gram, alpha0, reg, v, out):  # pragma: no cover - compiled
    """``out = (alpha0 G + reg I) v``, G symmetric, read row by row (axpy form)."""
    d = v.shape[0]
    for j in range(d):
        out[j] = reg * v[j]
    for k in range(d):
        scale = alpha0 * v[k]
        row = gram[k]
        for j in range(d):
            out[j] += scale * row[j]


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def cg_rows(indptr, indices, other, gram, reg, alpha0, x, steps, losses):  # pragma: no cover
    """``steps`` conjugate-gradient iterations per row, warm-started from ``x`` (in place).

    Args:
        indptr, indices: CSR structure of the ``n × m`` binary matrix.
        other: ``m × d`` float32 fixed factors :math:`Y`.
        gram: ``d × d`` float32 :math:`Y^\\top Y`.
        reg: ``(n,)`` float32 :math:`\\lambda_r`.
        alpha0: :math:`\\alpha_0`.
        x: ``n × d`` float32 start, overwritten by the result.
        steps: Iterations per row (each one pass over the row's entries).
        losses: ``(n,)`` float64 output, the row's objective at the result, when ``losses``
            has ``n`` entries (pass an empty array to skip it). It costs no extra pass: the
            objective at the start is summed during the residual pass, and each step
            subtracts the exact change of the quadratic along its direction,
            :math:`2a\\,p^\\top r - a^2 p^\\top A p` (float64 scalars; the residual
            :math:`r` is the recursively updated one, so it agrees with a direct evaluation
            to float32 rounding).
    """
    n, d = x.shape
    with_loss = losses.shape[0] == n
    for r in prange(n):
        start, end = indptr[r], indptr[r + 1]
        w = x[r]
        if start == end:
            w[:] = 0.0
            if with_loss:
                losses[r] = 0.0
            continue
        lam = reg[r]
        residual = np.empty(d, dtype=np.float32)
        direction = np.empty(d, dtype=np.float32)
        applied = np.empty(d, dtype=np.float32)
        # residual = b - A w; on the way, the row's objective at the start,
        # f(w) = sum_i (y_i.w - 1)^2 + w^T (alpha0 G + lam I) w.
        _base_product(gram, alpha0, lam, w, applied)
        objective = np.float64(_dot(w, applied))
        for j in range(d):
            residual[j] = -applied[j]
        for e in range(start, end):
            y = other[indices[e]]
            t = np.float32(1.0) - _dot(y, w)
            objective += np.float64(t) * np.float64(t)
            for j in range(d):
                residual[j] += t * y[j]
        for j in range(d):
            direction[j] = residual[j]
        norm = np.float64(_dot(residual, residual))
        for _ in range(steps):
            if norm <= 1e-30:
                break
            _base_product(gram, alpha0, lam, direction, applied)
            for e in range(start, end):
                y = other[indices[e]]
                t = _dot(y, direction)
                for j in range(d):
                    applied[j] += t * y[j]
            curvature = np.float64(_dot(direction, applied))
            if curvature <= 0.0:
                break
            step = norm / curvature
            # f(w + a p) = f(w) - 2 a p^T r + a^2 p^T A p: the exact change of the quadratic.
            objective -= (
                2.0 * step * np.float64(_dot(direction, residual)) - step * step * curvature
            )
            step32 = np.float32(step)
            for j in range(d):
                w[j] += step32 * direction[j]
                residual[j] -= step32 * applied[j]
            new_norm = np.float64(_dot(residual, residual))
            ratio = np.float32(new_norm / norm)
            for j in range(d):
                direction[j] = residual[j] + ratio * direction[j]
            norm = new_norm
        if with_loss:
            losses[r] = objective


@njit(fastmath=_FASTMATH, inline="always")
def _row_loss(other, gram, alpha0, lam, indices, start, end, w, scratch):  # pragma: no cover
    """:math:`\\sum_{i\\in I_r}(y_i^\\top w - 1)^2 + \\alpha_0 w^\\top G w + \\lambda_r|w|^2`."""
    observed = 0.0
    for e in range(start, end):
        error = np.float64(_dot(other[indices[e]], w)) - 1.0
        observed += error * error
    _base_product(gram, alpha0, lam, w, scratch)
    return observed + np.float64(_dot(w, scratch))


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def row_losses(indptr, indices, other, gram, reg, alpha0, x):  # pragma: no cover
    """Each row's objective at ``x`` (see :func:`cg_rows`), float64."""
    n, d = x.shape
    out = np.zeros(n, dtype=np.float64)
    for r in prange(n):
        scratch = np.empty(d, dtype=np.float32)
        out[r] = _row_loss(
            other, gram, alpha0, reg[r], indices, indptr[r], indptr[r + 1], x[r], scratch
        )
    return out


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def exact_rows(indptr, indices, other, gram, reg, alpha0, x):  # pragma: no cover
    """Exact solves by Cholesky factorisation of each row's :math:`A_r`, into ``x``.

    :math:`Y_{I_r}^\\top Y_{I_r}` is accumulated in float32 by BLAS over blocks of gathered
    rows; the factorisation and the substitutions run in float64.

    Returns:
        The number of rows whose :math:`A_r` was not numerically positive definite (their
        ``x`` rows are NaN).
    """
    n, d = x.shape
    failures = np.zeros(n, dtype=np.int64)
    for r in prange(n):
        start, end = indptr[r], indptr[r + 1]
        w = x[r]
        if start == end:
            w[:] = 0.0
            continue
        # Y_I^T Y_I and Y_I^T 1 by blocks of gathered rows (one BLAS product per block).
        block = np.empty((min(end - start, _BLOCK), d), dtype=np.float32)
        outer = np.zeros((d, d), dtype=np.float32)
        rhs = np.zeros(d, dtype=np.float64)
        for first in range(start, end, _BLOCK):
            size = min(_BLOCK, end - first)
            part = block[:size]
            for e in range(size):
                part[e] = other[indices[first + e]]
            outer += np.dot(part.T, part)
            for e in range(size):
                for j in range(d):
                    rhs[j] += part[e, j]
        system = np.empty((d, d), dtype=np.float64)
        for j in range(d):
            for k in range(j + 1):
                system[j, k] = np.float64(outer[j, k]) + alpha0 * np.float64(gram[j, k])
            system[j, j] += reg[r]
        # In-place Cholesky, lower triangle: system = L L^T.
        ok = True
        for j in range(d):
            pivot = system[j, j]
            for k in range(j):
                pivot -= system[j, k] * system[j, k]
            if not pivot > 0.0:
                ok = False
                break
            pivot = np.sqrt(pivot)
            system[j, j] = pivot
            for i in range(j + 1, d):
                value = system[i, j]
                for k in range(j):
                    value -= system[i, k] * system[j, k]
                system[i, j] = value / pivot
        if not ok:
            failures[r] = 1
            w[:] = np.nan
            continue
        # Forward then backward substitution.
        for j in range(d):
            value = rhs[j]
            for k in range(j):
                value -= system[j, k] * rhs[k]
            rhs[j] = value / system[j, j]
        for j in range(d - 1, -1, -1):
            value = rhs[j]
            for k in range(j + 1, d):
                value -= system[k, j] * rhs[k]
            rhs[j] = value / system[j, j]
        for j in range(d):
            w[j] = rhs[j]
    return failures.sum()


def run_parallel(kernel, *args, threads: int):
    """Call a kernel with ``threads`` numba threads, dynamic scheduling in small chunks, and
    a single-threaded BLAS (the kernels call it from each of their threads)."""
    previous = numba.get_num_threads()
    # numba.config creates its settings at run time (globals()), so mypy cannot see them.
    most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    numba.set_num_threads(max(1, min(threads, most)))
    try:
        with threadpoolctl.threadpool_limits(1, "blas"), numba.parallel_chunksize(_CHUNK):
            return kernel(*args)
    finally:
        numba.set_num_threads(previous)
