"""Data-parallel workers without Ray: a real ``torch.distributed`` gloo group on this machine.

A :class:`GlooWorker` is one worker of a data-parallel fit
(:class:`~privrank.models.parallel.DataParallel`) over its own gloo process group, built from a
shared key-value store instead of the process-wide default group, so that a test can run a fit's
workers as threads of one process (:func:`run_in_threads`: the group's collectives are real, the
workers share torch's global random state) or as separate processes (:func:`run_in_processes`:
spawned, nothing shared but the group). A collective that waits longer than ``timeout_s`` for
its peers raises instead of hanging, so a test of a would-be hang fails with an error.
"""

from __future__ import annotations

import multiprocessing
import queue
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from privrank.errors import DistributedFitError

__all__ = ["GlooWorker", "run_in_processes", "run_in_threads"]


class GlooWorker:
    """One worker (:class:`~privrank.models.parallel.DataParallel`) of a gloo group of
    ``world_size`` workers that meet in ``store``.

    Args:
        store: The store every worker of the group was given (a ``torch.distributed.HashStore``
            shared by threads, a ``FileStore`` shared by processes).
        rank: This worker's rank.
        world_size: Workers in the group.
        timeout_s: Seconds a collective waits for the other workers before it raises.
    """

    def __init__(self, store: Any, rank: int, world_size: int, timeout_s: float):
        self.rank = rank
        self.world_size = world_size
        # torch's stubs omit the backend's collectives (allreduce, broadcast); they exist.
        self._group: Any = dist.ProcessGroupGloo(
            dist.PrefixStore("privrank-gloo", store),
            rank,
            world_size,
            timedelta(seconds=timeout_s),
        )

    def all_reduce(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum the tensors over the workers, in place (one flat float64 buffer, as
        :class:`privrank.distributed.ray_train.TorchWorkers`)."""
        if not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        self._group.allreduce([flat]).wait()
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset : offset + tensor.numel()].reshape(tensor.shape))
            offset += tensor.numel()

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Rank 0's ``tensor`` on every worker, in place."""
        self._group.broadcast(tensor, 0).wait()


def run_in_threads(
    work: Callable[[GlooWorker], Any], world_size: int = 2, timeout_s: float = 30.0
) -> list[Any]:
    """Run ``work(worker)`` on ``world_size`` threads, each one worker of a fresh gloo group.

    Returns:
        Each rank's result, by rank.

    Raises:
        DistributedFitError: A worker raised (the first rank's error, with its traceback), or
            a thread was still running ``timeout_s`` seconds after the others ended.
    """
    store = dist.HashStore()
    results: list[Any] = [None] * world_size
    errors: dict[int, BaseException] = {}

    def run(rank: int) -> None:
        try:
            results[rank] = work(GlooWorker(store, rank, world_size, timeout_s))
        except BaseException as exc:  # reported by the caller's thread
            errors[rank] = exc

    threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s * 2)
    if any(thread.is_alive() for thread in threads):
        raise DistributedFitError(f"a worker thread still runs after {2 * timeout_s} s")
    if errors:
        rank = min(errors)
        raise DistributedFitError(f"worker {rank} failed: {errors[rank]!r}") from errors[rank]
    return results


def _process_main(
    work: Callable[..., Any],
    args: tuple[Any, ...],
    store_path: str,
    rank: int,
    world_size: int,
    timeout_s: float,
    results: Any,
) -> None:
    try:
        store = dist.FileStore(store_path, world_size)
        worker = GlooWorker(store, rank, world_size, timeout_s)
        results.put((rank, True, work(worker, *args)))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def run_in_processes(
    work: Callable[..., Any],
    *args: Any,
    world_size: int = 2,
    timeout_s: float = 60.0,
    deadline_s: float = 600.0,
) -> list[Any]:
    """Run ``work(worker, *args)`` in ``world_size`` spawned processes, one gloo worker each.

    ``work`` and ``args`` must be picklable (``work`` a module-level function).

    Args:
        work: What each worker runs.
        args: Its further arguments.
        world_size: Workers.
        timeout_s: Seconds a collective waits for the other workers before it raises.
        deadline_s: Seconds to wait for all the results (start-up included).

    Returns:
        Each rank's (picklable) result, by rank.

    Raises:
        DistributedFitError: A worker raised (every failed rank's traceback), or a process sent
            no result within ``deadline_s`` (it is then terminated).
    """
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    outcome: dict[int, tuple[bool, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="privrank-gloo-") as scratch:
        store_path = str(Path(scratch) / "store")
        processes = [
            context.Process(
                target=_process_main,
                args=(work, args, store_path, rank, world_size, timeout_s, results),
                daemon=True,
            )
            for rank in range(world_size)
        ]
        for process in processes:
            process.start()
        ends = time.monotonic() + deadline_s
        try:
            while len(outcome) < world_size:
                try:
                    rank, ok, value = results.get(timeout=max(ends - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                outcome[rank] = (ok, value)
        finally:
            for process in processes:
                process.join(5)
                if process.is_alive():
                    process.terminate()
                    process.join()
    failed = {rank: value for rank, (ok, value) in outcome.items() if not ok}
    if failed:
        raise DistributedFitError(
            "\n".join(f"worker {rank} failed:\n{text}" for rank, text in sorted(failed.items()))
        )
    missing = sorted(set(range(world_size)) - set(outcome))
    if missing:
        raise DistributedFitError(f"workers {missing} sent no result within {deadline_s} s")
    return [outcome[rank][1] for rank in range(world_size)]
