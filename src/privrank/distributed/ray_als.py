"""iALS over Ray actors: each actor holds a block of users and a block of items for the whole fit.

:class:`RayALSBlocks` implements :class:`~privrank.models.engine.ALSBlocks` (what
``IALS.fit`` asks of an engine, through ``RayEngine.als_blocks``). The interaction matrix is
partitioned **once**: the user rows and the item rows are each cut into ``workers`` contiguous
blocks of about equal cost (:func:`~privrank.models._als_blocks.block_bounds`), every block is
put in Ray's object store, and one long-lived actor per worker holds user block ``w`` and item
block ``w`` (:class:`~privrank.models._als_blocks.RowBlock`: its CSR rows and its
:math:`\\lambda_r`). Each half-step, the driver puts the other side's factors :math:`Y` in the
object store once (every actor reads the same object; on one node, zero-copy from shared
memory) with their Gramian :math:`G = Y^\\top Y` (computed once, on the driver), each actor
solves its block's rows with :func:`~privrank.models._als_solvers.half_step` (the in-process
kernels), and the driver stacks the blocks in row order. Rows are independent, so a fit on Ray
is the in-process fit **bit for bit** (same seed, same kernels on the same rows, the same
Gramian).

**Faults.** An actor is created with ``max_restarts``: when its process dies (killed, out of
memory, its node lost), Ray restarts it from the same blocks (its constructor's arguments stay
in the object store while the fit runs); the half-step it was computing is lost, and
:meth:`RayALSBlocks.solve` raises :class:`~privrank.errors.WorkerLostError`. ``IALS.fit`` then
resumes from its last checkpoint (``FitOptions.checkpoint_dir``, else the last completed epoch
kept in memory): the epoch is computed again from the same state, so the fit ends with the
factors of an uninterrupted fit.

**Privacy.** A non-private fit only: private iALS (DP-iALS) refuses an engine
(``supports_private_engine = False``; ``privrank train --epsilon ... --engine ray`` exits 2).
The actors see the raw training rows and are trusted with them, as the process of an
in-process fit is.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from privrank.errors import ConfigError, WorkerLostError
from privrank.models._als_blocks import RowBlock, block_bounds, row_block, stack_solutions
from privrank.models._als_solvers import gramian
from privrank.models.engine import ALSProblem, Side

__all__ = ["ALSWorker", "RayALSBlocks"]


class ALSWorker:
    """One actor's state: a block of user rows and a block of item rows (either may be
    ``None`` when a side has fewer rows than workers)."""

    def __init__(self, users: RowBlock | None, items: RowBlock | None, threads: int) -> None:
        self._blocks = {"users": users, "items": items}
        self._threads = threads

    def pid(self) -> int:
        """The actor process's id."""
        import os

        return os.getpid()

    def solve(
        self,
        side: Side,
        other: np.ndarray,
        gram: np.ndarray,
        current: np.ndarray | None,
        exact: bool,
        loss: bool,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The half-step of this actor's block of ``side`` (see :meth:`RowBlock.solve`)."""
        block = self._blocks[side]
        if block is None:  # pragma: no cover - the driver only asks actors with a block
            raise RuntimeError(f"this worker holds no block of {side}")
        return block.solve(other, gram, current, exact, loss, self._threads)


class RayALSBlocks:
    """An iALS problem partitioned once over ``workers`` long-lived Ray actors
    (see the module docstring).

    Args:
        problem: The :class:`~privrank.models.engine.ALSProblem`.
        workers: Actors (one CPU each). Ray must be running
            (:func:`privrank.distributed.ray_engine.ensure_ray`).
        threads: Threads of each actor's row loops.
        max_restarts: Times Ray restarts a dead actor during the fit.
        worker_class: The actor's class (tests give a subclass of :class:`ALSWorker`).
        restart_timeout_s: How long a half-step that lost an actor waits for Ray to restart
            it before the fit resumes.
    """

    def __init__(
        self,
        problem: ALSProblem,
        workers: int,
        *,
        threads: int = 1,
        max_restarts: int = 3,
        worker_class: type[ALSWorker] = ALSWorker,
        restart_timeout_s: float = 300.0,
    ) -> None:
        import ray

        self._ray = ray
        self.restart_timeout_s = restart_timeout_s
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if workers > cpus:
            raise ConfigError(
                f"--workers {workers}: iALS on Ray runs one actor per worker, each on a "
                f"CPU of its own, more than the {cpus} CPUs of the Ray cluster; expected at most "
                f"{cpus} workers"
            )
        self._factors = problem.factors
        self._rows = {"users": problem.by_user.shape[0], "items": problem.by_item.shape[0]}
        bounds = {
            "users": block_bounds(problem.by_user, workers, problem.factors),
            "items": block_bounds(problem.by_item, workers, problem.factors),
        }
        actor_class = ray.remote(num_cpus=1, max_restarts=max_restarts, max_task_retries=0)(
            worker_class
        )
        # The blocks stay referenced here for the whole fit: a restarted actor reads them again.
        self._block_refs: list[Any] = []
        self._actors: list[Any] = []
        self._spans: dict[Side, list[tuple[int, int, int]]] = {"users": [], "items": []}
        for index in range(max(len(bounds["users"]), len(bounds["items"]))):
            refs: dict[Side, Any] = {}
            for side in ("users", "items"):
                if index < len(bounds[side]):
                    start, stop = bounds[side][index]
                    refs[side] = ray.put(row_block(problem, side, start, stop))
                    self._spans[side].append((index, start, stop))
                else:
                    refs[side] = None
            self._block_refs += [ref for ref in refs.values() if ref is not None]
            self._actors.append(actor_class.remote(refs["users"], refs["items"], threads))
        self._inexact = problem.cg_steps is not None
        self.pids()  # every actor started (and its blocks read) before the first half-step

    @property
    def actors(self) -> list[Any]:
        """The actor handles (one per worker)."""
        return list(self._actors)

    def pids(self) -> list[int]:
        """The process id of each actor."""
        return [int(pid) for pid in self._gather([a.pid.remote() for a in self._actors], "start")]

    def _gather(self, refs: list[Any], what: str) -> list[Any]:
        from ray.exceptions import RayActorError, WorkerCrashedError

        try:
            return list(self._ray.get(refs))
        except (RayActorError, WorkerCrashedError) as exc:
            self._await_restarts()
            raise WorkerLostError(
                f"an iALS worker (Ray actor) died during the {what}: {type(exc).__name__}; "
                "Ray restarts it from its blocks"
            ) from exc

    def _await_restarts(self) -> None:
        """Wait until every actor answers again (Ray restarts a dead one from its blocks), for
        at most ``restart_timeout_s``; an actor that is gone for good (restarts exhausted)
        ends the wait, and the next half-step fails again."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        deadline = time.monotonic() + self.restart_timeout_s
        for actor in self._actors:
            while time.monotonic() < deadline:
                try:
                    self._ray.get(actor.pid.remote(), timeout=max(deadline - time.monotonic(), 0))
                    break
                except ActorUnavailableError:  # restarting
                    time.sleep(0.1)
                except (RayActorError, self._ray.exceptions.GetTimeoutError):  # gone for good
                    return

    def solve(
        self, side: Side, other: np.ndarray, current: np.ndarray, exact: bool, loss: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One half-step over the actors (see :meth:`~privrank.models.engine.ALSBlocks.solve`).

        Raises:
            WorkerLostError: An actor died during the half-step.
        """
        other = np.ascontiguousarray(other, dtype=np.float32)
        other_ref = self._ray.put(other)
        gram = gramian(other)
        warm = self._inexact and not exact  # a conjugate-gradient step starts from ``current``
        refs = [
            self._actors[index].solve.remote(
                side, other_ref, gram, current[start:stop] if warm else None, exact, loss
            )
            for index, start, stop in self._spans[side]
        ]
        parts = self._gather(refs, f"{side} half-step")
        return stack_solutions(parts, self._rows[side], self._factors, loss)

    def close(self) -> None:
        """End the actors and release the blocks."""
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors = []
        self._block_refs = []
