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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from privrank.models._data_parallel import DataParallel

__all__ = ["DataParallel", "all_reduce_gradients", "share", "sync_generator", "worker_seed"]

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
