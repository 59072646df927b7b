"""Data-parallel training of the torch models: one worker's share of every batch.

A torch model's fit (SASRec, Mult-VAE) may run as ``world_size`` identical processes, *workers*,
that each hold a full replica of the network. :class:`DataParallel` is what one worker's fit is
given (``FitOptions(parallel=...)``): its rank, the number of workers, and a sum over workers
(``all_reduce``; ``privrank.distributed.ray_train`` implements it with ``torch.distributed`` over
gloo on Ray Train). Every worker draws the same random numbers for everything the batch depends
on (the seed's shuffles, negatives, DP-SGD's Poisson sample), so all workers see the same
*logical* batch; each computes the gradient of its share of it (:func:`share`, every
``world_size``-th row from its rank) and the shares are summed. This is DDP's scheme (Li et al.,
VLDB 2020: identical replicas, gradients all-reduced after backward) with one bucket.

**Exactness.** A loss that is a mean over *units* (users for Mult-VAE, next-item positions for
SASRec) over the batch is the weighted mean of the shares' means, weight = the share's units /
the batch's units. :func:`all_reduce_gradients` sums ``units_w · ∇ mean_w`` and the units over
the workers and divides, so every replica gets the gradient of the whole batch, and the
optimizer steps stay identical on every worker. With one worker nothing changes: the fit equals
the single-process fit exactly (same seed). With more, it differs by the order of float
additions, and by dropout and the VAE's latent samples, which each worker draws from its own
stream (:func:`worker_seed`).

**Private fits** (DP-SGD, :mod:`privrank.privacy.dpsgd`): the workers Poisson-sample the same
logical batch from the same secret stream, each clips the gradients of its share's users, the
clipped sums are all-reduced and the Gaussian noise is added **once**, by rank 0, before the
sum (as Opacus's ``DistributedDPOptimizer`` does), then divided by the expected batch size of
the logical batch. The released gradient is the single-process one: the same sampling rate, the
same steps, the same multiplier and clipping norm, hence the same accountant's ε.

**Stops are collective.** Because every step is a sum over all workers, all workers must train
the same epochs, or the one that goes on waits forever for the others in the gradient sum. The
epoch loop (:func:`~privrank.models._epochs.run_epochs`) is the one place that decides when to
stop, and on a data-parallel fit it decides through :class:`CollectiveStops`
(:func:`stop_agreement`, passed by the torch models' loop glue): the time budget counts the
**largest** elapsed time of any worker (each worker's clock is its own), early stopping follows
**rank 0's** validation metrics (each worker validates its own replica, and a float ranking can
differ between CPUs), and a resumed fit goes on only when every worker resumes from the same
epoch. Every such value travels through :meth:`DataParallel.all_reduce` as a float64 vector
with one row per worker (each row summed with zeros, so exactly: :func:`gathered`), so every
worker acts on the same numbers and stops after the same epoch. With one worker, or without
``parallel``, there is no agreement and the loop is the single-process one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch

from privrank.errors import DistributedFitError
from privrank.models._data_parallel import DataParallel
from privrank.models._epochs import StopReason

__all__ = [
    "CollectiveStops",
    "DataParallel",
    "all_reduce_gradients",
    "gathered",
    "share",
    "stop_agreement",
    "sync_generator",
    "worker_seed",
]

#: The codes of a loop's end in :meth:`CollectiveStops.start`'s comparison.
_FINISHED: dict[StopReason | None, float] = {
    None: 0.0,
    "epochs": 1.0,
    "early stopping": 2.0,
    "time budget": 3.0,
}

T = TypeVar("T", np.ndarray, torch.Tensor)


def share(parallel: DataParallel | None, rows: T) -> T:
    """This worker's share of a logical batch: every ``world_size``-th row from ``rank``
    (the whole batch without ``parallel``)."""
    if parallel is None or parallel.world_size == 1:
        return rows
    return rows[parallel.rank :: parallel.world_size]


def worker_seed(seed: int, parallel: DataParallel | None) -> int:
    """The seed of a worker's own draws (dropout, latent samples): ``seed`` on rank 0 (so one
    worker reproduces the single-process fit), a distinct one on each other rank."""
    if parallel is None or parallel.rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, parallel.rank]).generate_state(1)[0])


def sync_generator(parallel: DataParallel | None, generator: torch.Generator) -> None:
    """Give ``generator`` rank 0's state on every worker (the shared stream of shuffles and
    negatives stays shared even where a draw's size depends on the worker's share)."""
    if parallel is None or parallel.world_size == 1:
        return
    state = generator.get_state()
    parallel.broadcast(state)
    generator.set_state(state)


def all_reduce_gradients(
    parallel: DataParallel | None, parameters: Sequence[torch.Tensor], units: float
) -> float:
    """Make every worker's ``.grad`` the gradient of the whole logical batch's mean loss.

    Each worker holds ``∇ mean_w`` over its ``units`` (users or positions); afterwards every
    worker holds ``Σ_w units_w ∇ mean_w / Σ_w units_w`` (one flat all-reduce). A parameter
    without a gradient (an empty share) contributes zeros.

    Returns:
        The batch's units ``Σ_w units_w`` (``units`` without ``parallel``).
    """
    if parallel is None or parallel.world_size == 1:
        return units
    flat = torch.cat(
        [
            (p.grad * units).reshape(-1) if p.grad is not None else torch.zeros(p.numel())
            for p in parameters
        ]
        + [torch.tensor([float(units)])]
    ).to(torch.float64)
    parallel.all_reduce([flat])
    total = float(flat[-1])
    offset = 0
    for p in parameters:
        piece = flat[offset : offset + p.numel()].reshape(p.shape)
        offset += p.numel()
        value = (piece / total if total > 0 else piece).to(p.dtype)
        if p.grad is None:
            p.grad = value
        else:
            p.grad.copy_(value)
    return total


def gathered(parallel: DataParallel, values: Sequence[float]) -> np.ndarray:
    """Every worker's ``values``, on every worker: ``(world_size, len(values))`` float64, row
    ``r`` rank ``r``'s.

    One all-reduce of a zero matrix in which each worker fills its own row: each entry is one
    worker's value plus zeros, so every value arrives exactly (a ``-0.0`` arrives as ``0.0``).
    """
    table = torch.zeros((parallel.world_size, len(values)), dtype=torch.float64)
    table[parallel.rank] = torch.tensor([float(v) for v in values], dtype=torch.float64)
    parallel.all_reduce([table])
    return table.numpy()


class CollectiveStops:
    """The epoch loop's :class:`~privrank.models._epochs.Agreement` over a data-parallel fit's
    workers: the largest elapsed time, rank 0's validation metrics, one resume point.

    Args:
        parallel: This worker's place in the fit.
    """

    def __init__(self, parallel: DataParallel):
        self.parallel = parallel

    def start(self, epoch: int, finished: StopReason | None) -> None:
        """Check that every worker resumes after the same epoch, finished alike.

        Raises:
            DistributedFitError: On every worker, when they differ (their checkpoints are not
                of the same epoch of one fit, so their replicas differ too).
        """
        table = gathered(self.parallel, [epoch, _FINISHED[finished]])
        if (table != table[0]).any():
            points = ", ".join(
                f"rank {rank} after epoch {int(row[0])}" + (" (finished)" if row[1] else "")
                for rank, row in enumerate(table)
            )
            raise DistributedFitError(
                f"the workers of a data-parallel fit resume from different points ({points}): "
                "their checkpoints are not of the same epoch; remove the fit's checkpoints to "
                "start it afresh"
            )

    def elapsed(self, seconds: float) -> float:
        """The largest of the workers' elapsed seconds."""
        return float(gathered(self.parallel, [seconds])[:, 0].max())

    def metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Rank 0's validation metrics (the same names, in the same order, on every worker)."""
        names = list(metrics)
        row = gathered(self.parallel, [metrics[name] for name in names])[0]
        return {name: float(value) for name, value in zip(names, row, strict=True)}


def stop_agreement(parallel: DataParallel | None) -> CollectiveStops | None:
    """The agreement the epoch loop of a fit with ``parallel`` must decide its stops through
    (``None`` without ``parallel`` or with one worker: the loop decides alone, as it always
    did)."""
    if parallel is None or parallel.world_size == 1:
        return None
    return CollectiveStops(parallel)
