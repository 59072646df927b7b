"""iALS half-steps over row blocks: the unit of work an engine's workers hold.

A half-step of iALS solves every row of one side (users, or items) with the other side's
factors :math:`Y` fixed; each row's solution depends only on its own entries, its
:math:`\\lambda_r`, :math:`Y` and the Gramian :math:`G = Y^\\top Y` of the *whole* other side
(:func:`~privrank.models._als_solvers.half_step`). A :class:`RowBlock` is a contiguous run of
rows ``start … stop`` of one side (its slice of the CSR matrix and of :math:`\\lambda`); solving
every block with the whole :math:`Y` and :math:`G` and stacking the blocks in order gives the
whole half-step exactly (the same kernels on the same rows: bit for bit).

:func:`block_bounds` cuts a side into blocks of about equal cost (an exact row solve costs
:math:`O(|I_r| d^2 + d^3)`); :class:`LocalALSBlocks` is the in-process
:class:`~privrank.models.engine.ALSBlocks` (one block per side), and
``privrank.distributed.ray_als.RayALSBlocks`` keeps one block of each side on each Ray actor.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from privrank.models._als_solvers import gramian, half_step
from privrank.models.engine import ALSProblem, Side

__all__ = ["LocalALSBlocks", "RowBlock", "block_bounds", "row_block", "stack_solutions"]


@dataclass(frozen=True)
class RowBlock:
    """Rows ``start … stop`` of one side of an iALS problem.

    Attributes:
        side: ``users`` or ``items``.
        start: First row (code).
        stop: One past the last row.
        matrix: The block's rows of the side's binary CSR (``stop - start`` rows).
        regularization: The block's :math:`\\lambda_r` (float32).
        unobserved_weight: :math:`\\alpha_0`.
        cg_steps: Conjugate-gradient steps of an inexact half-step, or ``None`` (exact).
    """

    side: Side
    start: int
    stop: int
    matrix: sp.csr_matrix
    regularization: np.ndarray
    unobserved_weight: float
    cg_steps: int | None

    def solve(
        self,
        other: np.ndarray,
        gram: np.ndarray,
        current: np.ndarray | None,
        exact: bool,
        loss: bool,
        threads: int,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The block's rows of the half-step (see
        :func:`~privrank.models._als_solvers.half_step`).

        Args:
            other: The other side's factors :math:`Y` (whole).
            gram: :math:`Y^\\top Y` of the whole ``other``.
            current: The block's current factors (``stop - start`` rows); needed unless exact.
            exact: Solve exactly (else ``cg_steps`` steps from ``current``; exact when the
                problem has no ``cg_steps``).
            loss: Also return each row's objective.
            threads: Threads of the row loop.
        """
        return half_step(
            self.matrix,
            other,
            gram,
            self.regularization,
            self.unobserved_weight,
            current,
            cg_steps=None if exact else self.cg_steps,
            threads=threads,
            loss=loss,
        )


def row_block(problem: ALSProblem, side: Side, start: int, stop: int) -> RowBlock:
    """Rows ``start … stop`` of ``side`` of ``problem`` as a :class:`RowBlock` (copies)."""
    users = side == "users"
    matrix = problem.by_user if users else problem.by_item
    regularization = problem.user_regularization if users else problem.item_regularization
    return RowBlock(
        side=side,
        start=start,
        stop=stop,
        matrix=sp.csr_matrix(matrix[start:stop]),
        regularization=np.ascontiguousarray(regularization[start:stop]),
        unobserved_weight=problem.unobserved_weight,
        cg_steps=problem.cg_steps,
    )


def block_bounds(matrix: sp.csr_matrix, blocks: int, factors: int) -> list[tuple[int, int]]:
    """Cut the rows of ``matrix`` into at most ``blocks`` contiguous, non-empty runs of about
    equal cost, the cost of row :math:`r` being :math:`|I_r| + d` (an exact solve's
    :math:`|I_r| d^2 + d^3`, over :math:`d^2`).

    Returns:
        ``[(start, stop), ...]`` in row order, covering every row (``[]`` for no rows).
    """
    rows = int(matrix.shape[0])
    if rows == 0:
        return []
    cost = np.cumsum(np.diff(matrix.indptr).astype(np.float64) + float(factors))
    targets = cost[-1] * np.arange(1, blocks) / blocks
    cuts = np.searchsorted(cost, targets, side="left") + 1
    edges = np.unique(np.clip(np.concatenate([[0], cuts, [rows]]), 0, rows))
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def stack_solutions(
    parts: list[tuple[np.ndarray, np.ndarray | None]], rows: int, factors: int, loss: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The blocks' ``(solutions, row objectives)``, in row order, stacked into the side's."""
    if not parts:
        empty = np.zeros((rows, factors), dtype=np.float32)
        return empty, (np.zeros(rows, dtype=np.float64) if loss else None)
    solutions = np.concatenate([part[0] for part in parts], axis=0)
    objectives = None
    if loss:
        pieces = [part[1] for part in parts]
        if any(piece is None for piece in pieces):  # pragma: no cover - solve returns them
            raise RuntimeError("a block did not return its row objectives")
        objectives = np.concatenate([p for p in pieces if p is not None])
    return solutions, objectives


class LocalALSBlocks:
    """The half-steps of an iALS problem in this process, each side one block
    (:class:`~privrank.models.engine.ALSBlocks` without an engine).

    Args:
        problem: The :class:`~privrank.models.engine.ALSProblem`.
        threads: Threads of the row loops.
    """

    def __init__(self, problem: ALSProblem, threads: int) -> None:
        self._problem = problem
        self._threads = threads

    def solve(
        self, side: Side, other: np.ndarray, current: np.ndarray, exact: bool, loss: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One half-step (see :meth:`~privrank.models.engine.ALSBlocks.solve`)."""
        problem = self._problem
        users = side == "users"
        return half_step(
            problem.by_user if users else problem.by_item,
            other,
            gramian(other),
            problem.user_regularization if users else problem.item_regularization,
            problem.unobserved_weight,
            current,
            cg_steps=None if exact else problem.cg_steps,
            threads=self._threads,
            loss=loss,
        )

    def close(self) -> None:
        """Nothing to release."""
