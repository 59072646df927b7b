"""Row-wise least-squares solves of implicit ALS over a sparse matrix (numpy in, numpy out).

Every solver finds, for every row :math:`r` of a sparse binary matrix (a user's items, or an
item's users), the minimiser of

.. math:: \\lVert y_{I_r} w - 1\\rVert^2 + \\alpha_0\\, w^\\top G w + \\lambda_r \\lVert w\\rVert^2,
   \\qquad G = Y^\\top Y,

i.e. the solution of :math:`(\\alpha_0 G + Y_{I_r}^\\top Y_{I_r} + \\lambda_r I)\\,w =
Y_{I_r}^\\top 1`, where :math:`Y` are the fixed factors of the other side and :math:`I_r` the
columns of row :math:`r`. Rows with no entries get :math:`w = 0` (the exact minimiser). The work
is done by the compiled kernels of :mod:`privrank.models._als_kernels`, in parallel over rows
on ``threads`` threads; rows are independent, so the result does not depend on ``threads``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from privrank.models import _als_kernels as kernels
from privrank.models.base import ModelFitError

__all__ = [
    "gramian",
    "half_step",
    "ials_objective",
    "row_objectives",
    "solve_cg",
    "solve_exact",
]

_NO_LOSSES = np.empty(0, dtype=np.float64)


def _structure(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    if not sp.isspmatrix_csr(matrix) and not isinstance(matrix, sp.csr_array):
        matrix = sp.csr_matrix(matrix)
    return matrix.indptr, matrix.indices


def _factors(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _run_rows(
    kernel,
    matrix: sp.csr_matrix,
    other: np.ndarray,
    gram: np.ndarray,
    regularization: np.ndarray,
    unobserved_weight: float,
    *extra: object,
    threads: int,
):
    """Run ``kernel`` over the rows of ``matrix`` on ``threads`` threads.

    The kernel gets the row structure and the normal-equation inputs (as contiguous float32,
    :math:`\\alpha_0` as a float), then ``extra``.
    """
    indptr, indices = _structure(matrix)
    return kernels.run_parallel(
        kernel,
        indptr,
        indices,
        _factors(other),
        _factors(gram),
        _factors(regularization),
        float(unobserved_weight),
        *extra,
        threads=threads,
    )


def gramian(factors: np.ndarray) -> np.ndarray:
    """:math:`Y^\\top Y` in float32 (one BLAS product)."""
    factors = _factors(factors)
    return np.ascontiguousarray(factors.T @ factors)


def solve_exact(
    matrix: sp.csr_matrix,
    other: np.ndarray,
    gram: np.ndarray,
    regularization: np.ndarray,
    unobserved_weight: float,
    threads: int = 1,
) -> np.ndarray:
    r"""Exact solves, one Cholesky factorisation per row.

    The compiled kernel forms each :math:`A_r` from float32 products (:func:`gramian` and
    :math:`Y_{I_r}^\top Y_{I_r}`). A Gramian of rank below :math:`d` (fewer items than
    factors, or factors blown up by noise) then carries negative rounding errors of about
    :math:`10^{-7}\lVert G\rVert`; once they outweigh :math:`\lambda_r`, a system that is
    positive definite in exact arithmetic fails its float32-built factorisation. Those rows
    (and only those) are solved again with :math:`A_r` built in float64 from ``other``, so
    the result is the exact solution whenever :math:`A_r` is numerically positive definite
    in float64; a row that fails there too is an error.

    Args:
        matrix: ``n × m`` binary CSR; row ``r`` lists :math:`I_r`.
        other: ``m × d`` fixed factors :math:`Y`.
        gram: ``d × d`` Gramian :math:`Y^\top Y` (:func:`gramian` of ``other``; the float64
            retry recomputes it from ``other``).
        regularization: ``(n,)`` per-row :math:`\lambda_r` (> 0 on non-empty rows).
        unobserved_weight: :math:`\alpha_0`.
        threads: Threads of the row loop.

    Returns:
        ``n × d`` float32 solutions (zero rows for empty rows).

    Raises:
        ModelFitError: A normal-equation matrix is not numerically positive definite, even
            built in float64.
    """
    out = np.empty((matrix.shape[0], other.shape[1]), dtype=np.float32)
    failures = _run_rows(
        kernels.exact_rows,
        matrix,
        other,
        gram,
        regularization,
        unobserved_weight,
        out,
        threads=threads,
    )
    if failures:
        failures = _solve_rows_in_float64(matrix, other, regularization, unobserved_weight, out)
    if failures:
        raise ModelFitError(
            f"{failures} ALS normal-equation matrices are not positive definite; "
            "raise the regularization"
        )
    return out


def _solve_rows_in_float64(
    matrix: sp.csr_matrix,
    other: np.ndarray,
    regularization: np.ndarray,
    unobserved_weight: float,
    out: np.ndarray,
) -> int:
    """Solve again, with :math:`A_r` built and factorised in float64, the rows of ``out`` that
    the kernel left NaN (their factorisation failed), in place.

    Returns:
        The number of rows whose float64 :math:`A_r` is not positive definite either (their
        rows stay NaN).
    """
    indptr, indices = _structure(matrix)
    factors = np.asarray(other, dtype=np.float64)
    gram = factors.T @ factors
    eye = np.eye(factors.shape[1])
    failed = 0
    for row in np.flatnonzero(np.isnan(out).any(axis=1)):
        picked = factors[indices[indptr[row] : indptr[row + 1]]]
        system = unobserved_weight * gram + picked.T @ picked + float(regularization[row]) * eye
        try:
            factor = np.linalg.cholesky(system)
        except np.linalg.LinAlgError:
            failed += 1
            continue
        solution = scipy.linalg.cho_solve((factor, True), picked.sum(axis=0))
        out[row] = solution.astype(np.float32)
    return failed


def solve_cg(
    matrix: sp.csr_matrix,
    other: np.ndarray,
    gram: np.ndarray,
    regularization: np.ndarray,
    unobserved_weight: float,
    start: np.ndarray,
    steps: int,
    threads: int = 1,
    with_losses: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Approximate solves by ``steps`` conjugate-gradient iterations warm-started at ``start``.

    An iteration costs one pass over the row's entries, :math:`O(|I_r| d + d^2)`, without
    forming :math:`Y_{I_r}^\\top Y_{I_r}`. Warm starting from the previous epoch's factors
    (Takács, Pilászy and Tikk 2011; implicit does the same) makes a few steps enough, and
    every step lowers each row's objective, so the training loss never increases.

    Returns:
        ``(solutions, losses)``: ``n × d`` float32 (a new array; ``start`` is left as it was)
        and, with ``with_losses``, each row's objective at its solution (float64), else None.
    """
    out = np.array(start, dtype=np.float32, order="C", copy=True)
    losses = np.empty(matrix.shape[0], dtype=np.float64) if with_losses else _NO_LOSSES
    _run_rows(
        kernels.cg_rows,
        matrix,
        other,
        gram,
        regularization,
        unobserved_weight,
        out,
        int(steps),
        losses,
        threads=threads,
    )
    return out, (losses if with_losses else None)


def row_objectives(
    matrix: sp.csr_matrix,
    factors: np.ndarray,
    other: np.ndarray,
    gram: np.ndarray,
    regularization: np.ndarray,
    unobserved_weight: float,
    threads: int = 1,
) -> np.ndarray:
    """Each row's objective :math:`\\lVert Y_{I_r} w_r - 1\\rVert^2 + \\alpha_0 w_r^\\top G w_r
    + \\lambda_r\\lVert w_r\\rVert^2` at ``factors`` (float64)."""
    return _run_rows(
        kernels.row_losses,
        matrix,
        other,
        gram,
        regularization,
        unobserved_weight,
        _factors(factors),
        threads=threads,
    )


def ials_objective(
    user_row_objectives: np.ndarray, items: np.ndarray, item_regularization: np.ndarray
) -> float:
    """The iALS training objective (see :class:`~privrank.models.ials.IALS`) from the users'
    row objectives (with :math:`G = H^\\top H`) and the items' penalty.

    Summed over users, the row objectives hold the observed term, the whole unobserved term
    (:math:`\\alpha_0 \\sum_u w_u^\\top H^\\top H w_u = \\alpha_0\\langle W^\\top W,
    H^\\top H\\rangle_F`) and the users' penalty; the items' penalty is added here.
    """
    squares = np.square(items.astype(np.float64)).sum(axis=1)
    penalty = float(np.dot(item_regularization.astype(np.float64), squares))
    return float(user_row_objectives.sum()) + penalty


def half_step(
    matrix: sp.csr_matrix,
    other: np.ndarray,
    gram: np.ndarray,
    regularization: np.ndarray,
    unobserved_weight: float,
    current: np.ndarray | None,
    *,
    cg_steps: int | None,
    threads: int,
    loss: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One half-step of iALS: every row of ``matrix`` solved with ``other`` fixed.

    With ``cg_steps`` (an int) each row takes that many conjugate-gradient steps from its
    ``current`` value (:func:`solve_cg`); with ``None`` it is solved exactly
    (:func:`solve_exact`). Rows are independent, so the solution of a block of rows (a slice
    of ``matrix``, ``regularization`` and ``current``) is the same block of the whole solution.

    Args:
        gram: :math:`Y^\\top Y` of the whole ``other`` (:func:`gramian`), not of a block.
        loss: Also return each row's objective at its solution (:func:`row_objectives`).

    Returns:
        ``(solutions, row objectives or None)``.
    """
    if cg_steps is not None:
        if current is None:
            raise ValueError("a conjugate-gradient half-step needs the current factors")
        return solve_cg(
            matrix, other, gram, regularization, unobserved_weight, current, cg_steps,
            threads, loss,
        )  # fmt: skip
    solved = solve_exact(matrix, other, gram, regularization, unobserved_weight, threads)
    rows = None
    if loss:
        rows = row_objectives(
            matrix, solved, other, gram, regularization, unobserved_weight, threads
        )
    return solved, rows
