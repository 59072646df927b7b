"""The Ray runtime of the data engine: connecting, and running per-partition tasks on Ray Data.

Every pass of the engine is a list of small task descriptions (one per input partition, or one
per user bucket) mapped by a function. :func:`map_partitions` runs the map as a Ray Data
dataset (``from_items`` → ``map`` → ``iter_rows``): Ray Data's streaming executor schedules the
tasks over the cluster's CPUs, bounds how many run at once and how much output waits in the
object store (backpressure), and the driver consumes results one at a time. Results are
commutative summaries (counts, vocabularies) or paths of files the tasks wrote, so the driver
never holds a partition's rows.

Errors privrank raises on purpose inside a task (:class:`~privrank.errors.PrivrankError`) are
returned, not raised, and re-raised on the driver as they were, so the CLI's exit code 2 and
the message (file, line, field, value, expected) survive the trip through Ray.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from privrank.errors import ConfigError, PrivrankError

__all__ = ["map_partitions", "ray_runtime"]


@contextmanager
def ray_runtime(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_bytes: int | None = None,
) -> Iterator[None]:
    """Use a running Ray cluster, or start a local one for the duration of the block.

    Args:
        address: A cluster to connect to (``ray://host:10001``, ``auto``, ``host:6379``);
            ``None``: the ``RAY_ADDRESS`` environment variable when set, else a local instance.
        num_cpus: CPUs of a local instance (default: all).
        object_store_bytes: Object store of a local instance (default: Ray's, 30 % of memory).

    Raises:
        ConfigError: Ray is not installed.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:  # pragma: no cover - the ray extra is part of dev
        raise ConfigError("--engine ray needs Ray: pip install 'privrank[ray]'") from exc
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
        address = address or os.environ.get("RAY_ADDRESS")
        common: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=num_cpus, object_store_memory=object_store_bytes, **common)
        started = True
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-pass "finished" lines
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def map_partitions(
    function: Callable[[Any], Any], tasks: list[Any], *, max_parallel: int | None = None
) -> Iterator[Any]:
    """Run ``function`` on every task with Ray Data; yield the results as they complete.

    Args:
        function: A module-level function of one task description (picklable).
        tasks: The task descriptions (small, picklable).
        max_parallel: At most this many tasks at once (default: Ray Data's, the cluster CPUs).

    Yields:
        ``function(task)`` for every task, in completion order.

    Raises:
        PrivrankError: The first one a task raised (the others are abandoned).
    """
    import ray.data

    if not tasks:
        return
    items = [{"task": pickle.dumps(task)} for task in tasks]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    options: dict[str, Any] = {"num_cpus": 1}
    if max_parallel is not None:
        options["concurrency"] = max(1, min(max_parallel, len(tasks)))
    mapped = dataset.map(functools.partial(_apply, function), **options)
    for row in mapped.iter_rows():
        outcome = pickle.loads(row["result"])
        if isinstance(outcome, _Failure):
            raise outcome.error
        yield outcome


class _Failure:
    """A privrank error raised by a task, carried back to the driver."""

    def __init__(self, error: PrivrankError) -> None:
        self.error = error


def _apply(function: Callable[[Any], Any], row: dict[str, Any]) -> dict[str, Any]:
    """The row function of :func:`map_partitions`: run one task, capture privrank errors."""
    task = pickle.loads(row["task"])
    try:
        result: Any = function(task)
    except PrivrankError as exc:
        result = _Failure(exc)
    return {"result": pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)}
