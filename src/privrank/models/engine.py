"""Fit engines: where the data-parallel part of a fit runs (this process, or a cluster).

A model's fit runs in the calling process. Some fits have a part that is a sum over users of a
function of each user's own row; that part may run elsewhere, on user partitions, and be summed.
:class:`FitEngine` is the small interface such a fit asks for; ``FitOptions(engine=...)`` passes
one, and a model that declares ``supports_engine`` uses it (others refuse it rather than
silently run in-process). ``privrank.distributed.RayEngine`` is the Ray implementation; without
an engine everything runs here.

What an engine computes:

- :meth:`FitEngine.gram_statistics`: the sums of the Gram-based models (EASE, ItemKNN and their
  DP variants): weighted item counts and the weighted Gram block
  (:class:`~privrank.privacy.gram_release.GramStatistics`). The private release adds its noise
  once, here, to the summed statistics: the guarantee does not depend on the engine.
- :meth:`ALSEngine.als_blocks` (an engine that also has it): the half-steps of iALS, each
  row block solved where the engine keeps it (:class:`ALSBlocks`); the rows are independent,
  so the assembled solution is the in-process one.

An engine that can also train a torch model's network data-parallel (SASRec, Mult-VAE: the
whole fit on several workers, each a replica, gradients summed over them,
:mod:`privrank.models.parallel`) implements
:class:`~privrank.models._torch_training.NetworkFitEngine` as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from privrank.privacy.gram_release import GramStatistics

__all__ = ["ALSBlocks", "ALSEngine", "ALSProblem", "FitEngine", "Side"]

Side = Literal["users", "items"]


@runtime_checkable
class FitEngine(Protocol):
    """Where the data-parallel part of a fit runs.

    Attributes:
        name: Short name recorded with the fit (``ray``).
    """

    name: str

    def gram_statistics(self, matrix: sp.csr_matrix) -> GramStatistics:
        """The :class:`~privrank.privacy.gram_release.GramStatistics` of the binary training
        ``matrix``, computed over user partitions by this engine."""
        ...

    def describe(self) -> dict[str, object]:
        """What the engine ran on, as JSON (engine name, workers, partitions, ...)."""
        ...


@dataclass(frozen=True)
class ALSProblem:
    """What an iALS fit's half-steps need besides the other side's factors.

    Attributes:
        by_user: Binary ``n_users × n_items`` CSR (row ``u``: the items of user ``u``).
        by_item: Its transpose as CSR (row ``i``: the users of item ``i``).
        user_regularization: ``(n_users,)`` float32 :math:`\\lambda_u`.
        item_regularization: ``(n_items,)`` float32 :math:`\\lambda_i`.
        unobserved_weight: :math:`\\alpha_0`.
        cg_steps: Conjugate-gradient steps of an inexact half-step (``solver="cg"``), or
            ``None``: every half-step is exact (Cholesky).
        factors: :math:`d` (used to balance the row blocks).
    """

    by_user: sp.csr_matrix
    by_item: sp.csr_matrix
    user_regularization: np.ndarray
    item_regularization: np.ndarray
    unobserved_weight: float
    cg_steps: int | None
    factors: int


@runtime_checkable
class ALSBlocks(Protocol):
    """An iALS problem partitioned once into row blocks held by an engine's workers."""

    def solve(
        self, side: Side, other: np.ndarray, current: np.ndarray, exact: bool, loss: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One half-step: every row of ``side`` solved with ``other`` (the other side's
        factors, whole) fixed, as :func:`~privrank.models._als_solvers.half_step` would on
        the whole matrix; exactly when ``exact`` (else by ``cg_steps`` steps from
        ``current``).

        Returns:
            ``(solutions, each row's objective or None)``, rows in code order.

        Raises:
            WorkerLostError: A worker died during the half-step (it is restarted; the
                half-step's result is lost).
        """
        ...

    def close(self) -> None:
        """Release the workers and the blocks they hold."""
        ...


@runtime_checkable
class ALSEngine(Protocol):
    """An engine that can run iALS half-steps over row blocks (see :class:`ALSBlocks`)."""

    name: str

    def als_blocks(self, problem: ALSProblem) -> ALSBlocks:
        """Partition ``problem`` into user and item blocks on this engine's workers."""
        ...

    def describe(self) -> dict[str, object]:
        """What the engine ran on, as JSON."""
        ...
