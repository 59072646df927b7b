"""Batch scoring and full-ranking evaluation on Ray: users partitioned over Ray tasks.

:func:`evaluate_on_ray` is the single-process evaluator
(:func:`privrank.metrics.evaluate.evaluate`) run by Ray tasks on contiguous partitions of the
evaluated users (each task evaluates its users' test rows with the same code, the same
training history and the same model), with every user's top-k list written to Parquet by the
task that ranked it:

- **Metrics.** The users are partitioned in ascending code order and each task returns its
  per-user metric arrays; concatenated in partition order they are the single-process arrays
  element for element, so the means are the single-process means exactly. Catalogue metrics
  (coverage, Gini) come from the exposure counts (integers) summed over partitions. Counts are
  summed (``users_without_test_items`` is the rest of the users).
- **Top-k on Parquet.** ``OUT/part-NNNNN.parquet`` (one per partition; columns ``user_id``,
  ``rank`` from 1, ``item_id``; external ids), each written atomically by its task into a
  directory that replaces ``OUT`` only when every task succeeded
  (:func:`privrank.atomic.atomic_directory`). The tasks must see the driver's file system
  (one machine, or a shared volume on a cluster).
- **Data.** Each task receives only its users' test rows and (unless beyond-accuracy metrics
  are asked, which need every user's training items) their training rows.
- **Partitions.** ``engine.partitions`` when set; else ``2 · workers`` (so a slow partition
  does not hold the others up), but no fewer than ``workers`` and no more than one partition per
  :data:`USERS_PER_PARTITION` users: each task pays a fixed cost (the model read from the object
  store, its share of the training rows prepared, one Parquet file), which a small partition
  does not repay.
- **Memory.** A task holds one ``[batch_size, n_items]`` score matrix at a time; at most
  ``workers`` tasks run at once. The driver holds the per-user metric arrays (8 bytes per user
  per metric) and never the score matrix.

The model travels to the workers through Ray's object store (one copy per node); scoring a
private model's release artifact sends only what its guarantee covers. Scoring spends no
privacy budget.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from privrank.atomic import atomic_directory, atomic_file
from privrank.data.interactions import Interactions
from privrank.distributed.ray_engine import RayEngineConfig, ensure_ray, ordered_results
from privrank.errors import ConfigError
from privrank.metrics import beyond
from privrank.metrics.evaluate import EvaluationConfig, EvaluationResult, EvaluationTiming, evaluate
from privrank.models import Recommender

__all__ = [
    "USERS_PER_PARTITION",
    "RayEvaluation",
    "evaluate_on_ray",
    "scoring_partitions",
    "write_top_k",
]

#: Below ``2 · workers`` of these, fewer partitions are made (see the module docstring).
USERS_PER_PARTITION = 20_000


@dataclass(frozen=True)
class RayEvaluation:
    """The result of :func:`evaluate_on_ray`.

    Attributes:
        result: The evaluation, as :func:`~privrank.metrics.evaluate.evaluate` returns it.
        partitions: Partitions (tasks) run.
        files: The Parquet files of top-k lists (empty without ``out``).
        seconds: Wall time of the whole call.
    """

    result: EvaluationResult
    partitions: int
    files: tuple[Path, ...]
    seconds: float


def write_top_k(model: Recommender, users: np.ndarray, top: np.ndarray, path: Path) -> None:
    """Write the top-k lists ``top`` (item codes, ``-1`` for none) of the user codes ``users``
    to the Parquet file ``path`` (atomically): columns ``user_id``, ``rank`` (from 1) and
    ``item_id`` in the model's external ids, one row per listed item."""
    depth = top.shape[1]
    user_ids = model.user_ids_.take(pa.array(np.repeat(users, depth)))
    valid = top.ravel() >= 0
    table = pa.table(
        {
            "user_id": user_ids.filter(pa.array(valid)),
            "rank": pa.array(np.tile(np.arange(1, depth + 1, dtype=np.int32), len(top))[valid]),
            "item_id": model.item_ids_.take(pa.array(top.ravel()[valid])),
        }
    )
    with atomic_file(path, "wb") as handle:
        pq.write_table(table, handle)


def _evaluate_partition(
    model: Recommender,
    train: Interactions,
    test: Interactions,
    users: np.ndarray,
    config: EvaluationConfig,
    part: Path | None,
) -> dict[str, Any]:
    result = evaluate(model.score, train, test, config)
    top = result.recommendations
    assert top is not None  # keep_recommendations is set by the driver
    exposure = (
        {k: beyond.exposure_counts(top, k, test.n_items) for k in config.cutoffs}
        if config.beyond_accuracy
        else {}
    )
    if part is not None:
        write_top_k(model, result.users, top, part)
    return {
        "users": result.users,
        "per_user": result.per_user,
        "exposure": exposure,
        "counts": result.counts,
        "timing": result.timing,
    }


def scoring_partitions(engine: RayEngineConfig, n_users: int) -> int:
    """Partitions of ``n_users`` evaluated users: ``engine.partitions`` when set, else
    ``2 · workers`` capped at one per :data:`USERS_PER_PARTITION` users, and at least
    ``workers`` (and 1)."""
    if engine.partitions is not None:
        return engine.partitions
    by_size = math.ceil(n_users / USERS_PER_PARTITION)
    return max(1, engine.workers, min(engine.resolved_partitions(), by_size))


@functools.cache
def _partition_task() -> Any:
    """The Ray remote function of one partition, made once per process (Ray exports a remote
    function's code to the cluster when it is first called in a session, not at every call)."""
    import ray

    return ray.remote(num_cpus=1)(_evaluate_partition)


def evaluate_on_ray(
    model: Recommender,
    train: Interactions,
    test: Interactions,
    config: EvaluationConfig | None = None,
    *,
    engine: RayEngineConfig | None = None,
    out: str | Path | None = None,
) -> RayEvaluation:
    """Full-ranking evaluation of ``model`` over Ray tasks, top-k lists written to Parquet.

    The protocol is :func:`privrank.metrics.evaluate.evaluate`'s (users scored by code, their
    training items excluded); see the module docstring for how it is partitioned and why the
    metrics equal the single-process ones.

    Args:
        model: A fitted model whose vocabulary is ``train``'s.
        train: The training history (excluded items, popularity of the beyond-accuracy metrics).
        test: Relevant items; same vocabulary.
        config: Evaluation options (``keep_recommendations`` is implied).
        engine: Ray settings (workers, partitions, address); default ``RayEngineConfig()``.
        out: Directory for the top-k Parquet files (replaced atomically), or ``None``.

    Raises:
        ConfigError: Vocabularies differ.
    """
    started = time.perf_counter()
    config = (config or EvaluationConfig()).model_copy(update={"keep_recommendations": True})
    engine = engine or RayEngineConfig()
    if not (model.user_ids_.equals(train.user_ids) and model.item_ids_.equals(test.item_ids)):
        raise ConfigError("evaluate_on_ray: the model's vocabulary is not the data's")
    ray = ensure_ray(engine)
    users = np.unique(test.users())
    chunks = [c for c in np.array_split(users, scoring_partitions(engine, len(users))) if c.size]
    model_ref = ray.put(model)
    # Each task gets its own users' rows only (so its preparation is O(its rows)); the
    # beyond-accuracy metrics need every user's training items (the popularity), so then
    # every task gets the whole training part (put once).
    tests = _user_parts(test, chunks)
    if config.beyond_accuracy:
        histories = [ray.put(train)] * len(chunks)
    else:
        histories = [ray.put(part) for part in _user_parts(train, chunks)]
    refs = [
        (model_ref, history, ray.put(part)) for history, part in zip(histories, tests, strict=True)
    ]
    task = _partition_task()
    if out is None:
        parts = _collect(ray, task, refs, chunks, config, None, engine.workers)
        files: tuple[Path, ...] = ()
    else:
        destination = Path(out)
        with atomic_directory(destination) as tmp:
            parts = _collect(ray, task, refs, chunks, config, tmp, engine.workers)
        files = tuple(destination / f"part-{i:05d}.parquet" for i in range(len(chunks)))
    result = _combine(parts, config, train, test, time.perf_counter() - started)
    return RayEvaluation(result, len(chunks), files, time.perf_counter() - started)


def _user_parts(data: Interactions, chunks: list[np.ndarray]) -> list[Interactions]:
    """The rows of each chunk's users (ascending, contiguous codes), same vocabulary."""
    if not chunks:
        return []
    users = data.users()
    order = np.argsort(users, kind="stable")
    bounds = np.searchsorted(users[order], [c[0] for c in chunks] + [chunks[-1][-1] + 1])
    return [data.take(np.sort(order[start:stop])) for start, stop in itertools.pairwise(bounds)]


def _collect(
    ray: Any,
    task: Any,
    refs: list[tuple[Any, Any, Any]],
    chunks: list[np.ndarray],
    config: EvaluationConfig,
    directory: Path | None,
    window: int,
) -> list[dict[str, Any]]:
    submitted = (
        task.remote(
            *refs[i],
            chunk,
            config,
            None if directory is None else directory / f"part-{i:05d}.parquet",
        )
        for i, chunk in enumerate(chunks)
    )
    return list(ordered_results(ray, submitted, window))


def _combine(
    parts: list[dict[str, Any]],
    config: EvaluationConfig,
    train: Interactions,
    test: Interactions,
    seconds: float,
) -> EvaluationResult:
    names = list(parts[0]["per_user"]) if parts else []
    per_user = {name: np.concatenate([p["per_user"][name] for p in parts]) for name in names}
    users = np.concatenate([p["users"] for p in parts]) if parts else np.zeros(0, np.int64)
    counts = {
        key: sum(int(p["counts"][key]) for p in parts)
        for key in ("users_evaluated", "cold_users", "test_pairs", "test_pairs_in_train")
    }
    counts["users_without_test_items"] = test.n_users - counts["users_evaluated"]
    aggregate: dict[str, float] = {}
    if config.beyond_accuracy:
        for k in config.cutoffs:
            exposure = sum(
                (p["exposure"][k] for p in parts), np.zeros(test.n_items, dtype=np.int64)
            )
            aggregate[f"coverage@{k}"] = beyond.catalog_coverage(exposure)
            aggregate[f"gini@{k}"] = beyond.gini(exposure)
    timing = EvaluationTiming(
        scoring=sum(p["timing"].scoring for p in parts),
        ranking=sum(p["timing"].ranking for p in parts),
        metrics=sum(p["timing"].metrics for p in parts),
        total=seconds,
    )
    return EvaluationResult(
        users=users,
        per_user=per_user,
        aggregate=aggregate,
        counts={
            k: counts[k]
            for k in (
                "users_evaluated",
                "users_without_test_items",
                "cold_users",
                "test_pairs",
                "test_pairs_in_train",
            )
        },
        timing=timing,
        config=config.model_copy(update={"keep_recommendations": False}),
    )
