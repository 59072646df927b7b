"""Batched least-squares solves of implicit ALS, vectorised in torch.

Both solvers find, for every row :math:`r` of a sparse binary matrix (a user's items, or an
item's users), the minimiser of

.. math:: \\lVert y_{I_r} w - 1\\rVert^2 + \\alpha_0\\, w^\\top G w + \\lambda_r \\lVert w\\rVert^2,
   \\qquad G = Y^\\top Y,

i.e. the solution of :math:`(\\alpha_0 G + Y_{I_r}^\\top Y_{I_r} + \\lambda_r I)\\,w =
Y_{I_r}^\\top 1`, where :math:`Y` are the fixed factors of the other side and :math:`I_r` the
columns of row :math:`r`. Rows with no entries get :math:`w = 0` (the exact minimiser).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from privrank.models.base import ModelFitError

__all__ = ["ials_objective", "solve_cg", "solve_exact"]

# Elements of gathered factors (rows × longest row × d) per chunk: bounds memory to ~64 MiB.
_GATHER_BUDGET = 1 << 24
# Normal-equation matrices (rows × d × d) per chunk.
_SYSTEM_BUDGET = 1 << 23


def _padded_chunks(
    matrix: sp.csr_matrix, other: torch.Tensor, system_rows: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-empty rows in chunks, with their columns' factors gathered and zero-padded.

    Rows are taken longest first; a chunk holds rows at least half as long as its longest, so
    padding (which gathers an appended zero row and adds nothing) at most doubles the work.

    Yields:
        ``(rows, factors)``: row indices (int64 tensor, ``b``) and ``b × L × d`` factors.
    """
    d = other.shape[1]
    lengths = np.diff(matrix.indptr)
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]
    padded = torch.cat([other, torch.zeros((1, d), dtype=other.dtype)])
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = _GATHER_BUDGET // (longest * d)
        if system_rows:
            size = min(size, _SYSTEM_BUDGET // (d * d))
        half = int(np.searchsorted(-lengths[order[start:]], -(longest // 2 + 1), "right"))
        rows = order[start : start + max(1, min(size, half))]
        start += len(rows)
        positions = np.arange(longest)
        valid = positions[None, :] < lengths[rows][:, None]
        flat = np.minimum(matrix.indptr[rows][:, None] + positions[None, :], matrix.nnz - 1)
        gather = np.where(valid, matrix.indices[flat], other.shape[0])
        flat_index = torch.from_numpy(gather.ravel())
        yield torch.from_numpy(rows), padded.index_select(0, flat_index).view(len(rows), longest, d)


def solve_exact(
    matrix: sp.csr_matrix,
    other: torch.Tensor,
    gram: torch.Tensor,
    regularization: torch.Tensor,
    unobserved_weight: float,
) -> torch.Tensor:
    """Exact solves by batched Cholesky factorisation.

    Args:
        matrix: ``n × m`` binary CSR; row ``r`` lists :math:`I_r`.
        other: ``m × d`` fixed factors :math:`Y`.
        gram: ``d × d`` Gramian :math:`Y^\\top Y`.
        regularization: ``(n,)`` per-row :math:`\\lambda_r` (> 0 on non-empty rows).
        unobserved_weight: :math:`\\alpha_0`.

    Returns:
        ``n × d`` solutions (zero rows for empty rows).
    """
    out = torch.zeros((matrix.shape[0], other.shape[1]), dtype=other.dtype)
    base = unobserved_weight * gram
    for rows, factors in _padded_chunks(matrix, other, system_rows=True):
        systems = torch.bmm(factors.transpose(1, 2), factors)
        systems += base
        systems.diagonal(dim1=1, dim2=2).add_(regularization[rows][:, None])
        rhs = factors.sum(dim=1).unsqueeze(-1)
        cholesky, info = torch.linalg.cholesky_ex(systems)
        if bool((info != 0).any()):
            raise ModelFitError(
                "an ALS normal-equation matrix is not positive definite in float32; "
                "raise the regularization"
            )
        out[rows] = torch.cholesky_solve(rhs, cholesky).squeeze(-1)
    return out


def solve_cg(
    matrix: sp.csr_matrix,
    other: torch.Tensor,
    gram: torch.Tensor,
    regularization: torch.Tensor,
    unobserved_weight: float,
    start: torch.Tensor,
    steps: int,
) -> torch.Tensor:
    """Approximate solves by ``steps`` conjugate-gradient iterations from ``start``.

    The product :math:`(\\alpha_0 G + \\lambda_r I)v + Y_{I_r}^\\top(Y_{I_r} v)` costs
    :math:`O(|I_r| d + d^2)` (two batched matrix-vector products over the gathered factors),
    so a step is linear in the number of interactions. Warm starting from the previous epoch's
    factors (Takács, Pilászy and Tikk 2011; implicit does the same) makes a few steps enough,
    and the objective never increases.
    """
    out = torch.zeros_like(start)
    base = unobserved_weight * gram
    for rows, factors in _padded_chunks(matrix, other, system_rows=False):
        reg = regularization[rows][:, None]

        def product(v: torch.Tensor, factors=factors, reg=reg) -> torch.Tensor:
            inner = torch.bmm(factors, v.unsqueeze(-1))  # b × L × 1: Y_I v
            # (Y_I v)^T Y_I as a row vector reads the factors in memory order (much faster
            # than Y_I^T (Y_I v) with a transposed operand).
            return torch.bmm(inner.transpose(1, 2), factors).squeeze(1) + v @ base + reg * v

        x = start[rows].clone()
        residual = factors.sum(dim=1) - product(x)
        direction = residual.clone()
        norm = (residual * residual).sum(dim=1)
        for _ in range(steps):
            applied = product(direction)
            curvature = (direction * applied).sum(dim=1)
            step = torch.where(curvature > 0, norm / curvature.clamp_min(1e-30), 0.0)
            x += step[:, None] * direction
            residual -= step[:, None] * applied
            new_norm = (residual * residual).sum(dim=1)
            ratio = torch.where(norm > 0, new_norm / norm.clamp_min(1e-30), 0.0)
            direction = residual + ratio[:, None] * direction
            norm = new_norm
        out[rows] = x
    return out


def ials_objective(
    matrix: sp.csr_matrix,
    users: torch.Tensor,
    items: torch.Tensor,
    user_regularization: torch.Tensor,
    item_regularization: torch.Tensor,
    unobserved_weight: float,
) -> float:
    """The iALS training objective (see :class:`~privrank.models.ials.IALS`).

    Predictions are float32 (as the model is); sums are accumulated in float64. The observed
    term is expanded as :math:`\\sum \\hat y^2 - 2\\sum \\hat y + |S|` over zero-padded
    chunks, where padding predicts exactly 0 and so adds nothing.
    """
    squares = linear = 0.0
    for rows, factors in _padded_chunks(matrix, items, system_rows=False):
        predictions = torch.bmm(factors, users[rows].unsqueeze(-1)).double()
        squares += float((predictions * predictions).sum())
        linear += float(predictions.sum())
    observed = squares - 2.0 * linear + matrix.nnz
    gram_users = (users.T @ users).double()
    gram_items = (items.T @ items).double()
    unobserved = unobserved_weight * float((gram_users * gram_items).sum())
    penalty = float((user_regularization.double() * users.double().square().sum(dim=1)).sum())
    penalty += float((item_regularization.double() * items.double().square().sum(dim=1)).sum())
    return observed + unobserved + penalty
