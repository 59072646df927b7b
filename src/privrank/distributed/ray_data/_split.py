"""``privrank data split --engine ray``: the holdout and leave-last-out splits on Ray Data.

The result is the split :func:`privrank.data.splits.split` gives on the same dataset — the
same label for every row, the same parts in the same row order, the same counts, details and
source fingerprint — computed without holding the dataset in one process:

1. **scatter** (a task per partition): rows go to user buckets with their global positions
   (:mod:`privrank.distributed.ray_data._buckets`);
2. **label** (a task per bucket): the single-process
   :func:`~privrank.data.splits.assign_labels` labels the bucket's rows. A user's labels depend
   only on its rows in time-then-position order, its code and the seed (the per-row keys of
   :mod:`privrank.data._ordering` hash ``(seed, user code, rank)``), and a bucket holds whole
   users in global-position order, so every label is the single-process one; the details
   (users kept in train only) are sums over users. Each bucket also counts train rows per item;
3. **unseen** (a task per bucket): with the global set of items seen in train, the rows of an
   evaluation part whose user or item has no train row are counted (and with
   ``unseen="drop"`` moved to ``dropped``) exactly as the single-process split does; users and
   (user, item) pairs never cross buckets, so their counts add up, and the unseen items of a
   part are the union of the buckets' sets. Labels go back to their partitions;
4. **write** (a task per partition): each part's rows, in input order, as one Parquet part per
   partition; per-part active users and items are OR-ed on the driver;
5. the source fingerprint is computed column by column, part by part
   (:func:`~privrank.data.fingerprint.fingerprint_stream`).

The split directory has the layout of :meth:`~privrank.data.splits.Split.save` (every part's
``interactions.parquet`` is a directory of parts), so :meth:`Split.load` reads it. It is built
under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from privrank.atomic import atomic_directory
from privrank.data.fingerprint import fingerprint_stream
from privrank.data.interactions import DatasetMetadata, Interactions
from privrank.data.splits import (
    PART_NAMES,
    HoldoutSplit,
    LeaveLastOut,
    PartCounts,
    SourceInfo,
    assign_labels,
    parse_split_spec,
)
from privrank.distributed.ray_data._buckets import (
    gather_labels,
    load_bucket,
    scatter_rows,
    write_back,
)
from privrank.distributed.ray_data._import import write_sidecar
from privrank.distributed.ray_data._options import RayDataOptions
from privrank.distributed.ray_data._parts import (
    Part,
    load_array,
    parquet_parts,
    part_name,
    save_array,
    write_table,
)
from privrank.distributed.ray_data._runtime import map_partitions, ray_runtime
from privrank.errors import ArtifactError, ConfigError, DataError

__all__ = ["RaySplitResult", "split_on_ray"]

TRAIN, VALIDATION, TEST, FOLD_IN, DROPPED = 0, 1, 2, 3, 4
_LABELS = {
    "train": TRAIN,
    "validation": VALIDATION,
    "fold_in": FOLD_IN,
    "test": TEST,
    "dropped": DROPPED,
}
_EVALUATION = (VALIDATION, TEST, FOLD_IN)


@dataclass(frozen=True)
class RaySplitResult:
    """What :func:`split_on_ray` wrote.

    Attributes:
        path: The split directory.
        spec: The split spec.
        counts: Rows, users, items and unseen counts per part (as :attr:`Split.counts`).
        source: The dataset split (name, fingerprint, sizes).
        details: The protocol's details (as :attr:`Split.details`).
    """

    path: Path
    spec: HoldoutSplit | LeaveLastOut
    counts: dict[str, PartCounts]
    source: SourceInfo
    details: dict[str, Any]


def split_on_ray(
    dataset: str | Path,
    spec: HoldoutSplit | LeaveLastOut | dict[str, Any],
    destination: str | Path,
    *,
    engine: RayDataOptions | None = None,
) -> RaySplitResult:
    """Split a saved dataset (single-file or partitioned) on Ray Data and save the split.

    Args:
        dataset: A dataset directory (``Interactions.save`` or ``import --engine ray``).
        spec: A ``holdout`` or ``leave_last_out`` spec (or its dict form).
        destination: The split directory (replaced atomically).
        engine: Where and how Ray runs.

    Returns:
        What was written.

    Raises:
        ConfigError: Another protocol.
        DataError: The dataset is empty, or train or test would be empty.
        ArtifactError: The dataset directory is unreadable.
    """
    engine = engine or RayDataOptions()
    parsed = parse_split_spec(spec)
    if not isinstance(parsed, HoldoutSplit | LeaveLastOut):
        raise ConfigError(
            f"--engine ray: the {parsed.protocol} protocol is not supported; the Ray engine "
            "splits with holdout and leave-last-out (use --engine local for the others)"
        )
    source = _Source.open(Path(dataset), engine.part_rows)
    if source.rows == 0:
        raise DataError(f"cannot split dataset {source.metadata.name!r}: it has no rows")
    destination = Path(destination)
    staging_root = engine.staging_dir or destination.parent
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.staging-", dir=staging_root))
    try:
        with ray_runtime(
            engine.address, num_cpus=engine.num_cpus, object_store_bytes=engine.object_store_bytes
        ):
            return _run(source, parsed, destination, engine, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -------------------------------------------------------------------- the source dataset
@dataclass
class _Source:
    directory: Path
    metadata: DatasetMetadata
    user_ids: pa.Array
    item_ids: pa.Array
    columns: list[str]
    parts: list[Part]
    rows: int

    @classmethod
    def open(cls, directory: Path, part_rows: int) -> _Source:
        sidecar_path = directory / "metadata.json"
        if not sidecar_path.is_file():
            raise ArtifactError(f"{directory} is not a privrank dataset: metadata.json is missing")
        try:
            sidecar = json.loads(sidecar_path.read_text())
            metadata = DatasetMetadata.from_json(sidecar["metadata"])
            user_ids = pq.read_table(directory / "users.parquet").column("id").combine_chunks()
            item_ids = pq.read_table(directory / "items.parquet").column("id").combine_chunks()
            table = directory / "interactions.parquet"
            files = sorted(table.glob("*.parquet")) if table.is_dir() else [table]
            parts = parquet_parts(files, part_rows)
            columns = list(pq.ParquetFile(files[0]).schema_arrow.names) if files else []
        except (OSError, KeyError, ValueError, pa.ArrowException, DataError) as exc:
            raise ArtifactError(f"cannot read dataset {directory}: {exc}") from exc
        rows = sum(p.rows or 0 for p in parts)
        if sidecar.get("counts", {}).get("interactions") != rows:
            raise ArtifactError(
                f"{directory}: metadata.json says {sidecar.get('counts', {}).get('interactions')} "
                f"interactions, interactions.parquet holds {rows}"
            )
        return cls(directory, metadata, user_ids, item_ids, columns, parts, rows)

    def read_column(self, name: str) -> Iterator[np.ndarray]:
        for part in self.parts:
            parquet = pq.ParquetFile(part.path)
            table = parquet.read_row_groups(list(part.row_groups or ()), columns=[name])
            for chunk in table.column(name).chunks:
                yield chunk.to_numpy()


# -------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class _ScatterTask:
    part: Part
    shuffle: str
    buckets: int


def _read_part(part: Part, columns: list[str] | None = None) -> pa.Table:
    return pq.ParquetFile(part.path).read_row_groups(list(part.row_groups or ()), columns=columns)


def _scatter(task: _ScatterTask) -> int:
    table = _read_part(task.part)
    names = table.column_names
    return scatter_rows(
        Path(task.shuffle),
        task.part,
        task.buckets,
        table.column("user").to_numpy(),
        table.column("item").to_numpy(),
        table.column("timestamp").to_numpy() if "timestamp" in names else None,
    )


@dataclass(frozen=True)
class _LabelTask:
    bucket: int
    shuffle: str
    labels: str
    spec: HoldoutSplit | LeaveLastOut
    n_users: int
    n_items: int


@dataclass
class _LabelOutcome:
    details: dict[str, int]
    label_rows: np.ndarray
    train_items: np.ndarray


def _label_bucket(task: _LabelTask) -> _LabelOutcome:
    rows = load_bucket(Path(task.shuffle), task.bucket)
    data = Interactions.from_codes(
        rows.users,
        rows.items,
        n_users=task.n_users,
        n_items=task.n_items,
        timestamps=rows.timestamps,
    )
    labels, details = assign_labels(data, task.spec)
    save_array(labels, Path(task.labels) / f"b{task.bucket:05d}.npy")
    train = labels == TRAIN
    return _LabelOutcome(
        details={k: int(v) for k, v in details.items()},
        label_rows=np.bincount(labels, minlength=5),
        train_items=np.bincount(rows.items[train], minlength=task.n_items),
    )


@dataclass(frozen=True)
class _UnseenTask:
    bucket: int
    shuffle: str
    labels: str
    back: str
    seen_items: str
    drop: bool
    n_users: int
    n_items: int


@dataclass
class _UnseenOutcome:
    stats: dict[int, dict[str, int]] = field(default_factory=dict)
    unseen_items: dict[int, np.ndarray] = field(default_factory=dict)


def _unseen_bucket(task: _UnseenTask) -> _UnseenOutcome:
    """``privrank.data.splits._handle_unseen`` on one bucket of whole users."""
    rows = load_bucket(Path(task.shuffle), task.bucket)
    labels = load_array(Path(task.labels) / f"b{task.bucket:05d}.npy")
    users, items = rows.users, rows.items
    seen_items = load_array(task.seen_items)
    train = labels == TRAIN
    seen_users = np.bincount(users[train], minlength=task.n_users) > 0
    row_unseen_user = ~seen_users[users]
    row_unseen_item = ~seen_items[items]
    out = _UnseenOutcome()
    width = max(task.n_items, 1)
    train_pairs = np.unique(users[train].astype(np.int64) * width + items[train])
    for label in _EVALUATION:
        in_part = labels == label
        if not in_part.any():
            continue
        bad_user = in_part & row_unseen_user
        bad_item = in_part & row_unseen_item
        bad = bad_user | bad_item
        out.stats[label] = {
            "unseen_users": int(np.unique(users[bad_user]).size),
            "unseen_rows": int(np.count_nonzero(bad)),
            "dropped_rows": int(np.count_nonzero(bad)) if task.drop else 0,
        }
        out.unseen_items[label] = np.unique(items[bad_item])
        if task.drop:
            labels[bad] = DROPPED
            in_part &= ~bad
        part_pairs = users[in_part].astype(np.int64) * width + items[in_part]
        found = 0
        if len(train_pairs) and len(part_pairs):
            position = np.minimum(np.searchsorted(train_pairs, part_pairs), len(train_pairs) - 1)
            found = int(np.count_nonzero(train_pairs[position] == part_pairs))
        out.stats[label]["pairs_in_train"] = found
    write_back(Path(task.back), task.bucket, rows, labels)
    return out


@dataclass(frozen=True)
class _WriteTask:
    part: Part
    back: str
    out: dict[int, str]
    n_users: int
    n_items: int


def _write_part(task: _WriteTask) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
    table = _read_part(task.part)
    labels = gather_labels(Path(task.back), task.part, np.full(table.num_rows, -1, dtype=np.int8))
    if np.any(labels < 0):
        raise ArtifactError(f"split: rows of {task.part.path} got no label (staging lost?)")
    users = table.column("user").to_numpy()
    items = table.column("item").to_numpy()
    result = {}
    for label, path in task.out.items():
        rows = np.flatnonzero(labels == label)
        write_table(table.take(pa.array(rows)), Path(path))
        result[label] = (
            len(rows),
            np.bincount(users[rows], minlength=task.n_users) > 0,
            np.bincount(items[rows], minlength=task.n_items) > 0,
        )
    return result


# -------------------------------------------------------------------- the driver
def _run(
    source: _Source,
    spec: HoldoutSplit | LeaveLastOut,
    destination: Path,
    engine: RayDataOptions,
    staging: Path,
) -> RaySplitResult:
    n_users, n_items = len(source.user_ids), len(source.item_ids)
    buckets = max(1, -(-source.rows // engine.part_rows))
    shuffle, labels_dir, back = staging / "shuffle", staging / "labels", staging / "back"

    def run(function: Any, tasks: list[Any]) -> Iterator[Any]:
        return map_partitions(function, tasks, max_parallel=engine.max_parallel)

    for _ in run(_scatter, [_ScatterTask(p, str(shuffle), buckets) for p in source.parts]):
        pass
    details: dict[str, int] = {}
    label_rows = np.zeros(5, dtype=np.int64)
    train_items = np.zeros(n_items, dtype=np.int64)
    label_tasks = [
        _LabelTask(b, str(shuffle), str(labels_dir), spec, n_users, n_items) for b in range(buckets)
    ]
    for outcome in run(_label_bucket, label_tasks):
        for key, value in outcome.details.items():
            details[key] = details.get(key, 0) + value
        label_rows += outcome.label_rows
        train_items += outcome.train_items
    for label, name in ((TRAIN, "train"), (TEST, "test")):
        if label_rows[label] == 0:
            raise DataError(
                f"{spec.protocol} split of dataset {source.metadata.name!r} leaves {name} empty",
                value=spec.model_dump(),
                expected=f"parameters that put rows in {name}",
            )
    seen_items = staging / "seen_items.npy"
    save_array(train_items > 0, seen_items)
    drop = spec.unseen == "drop"
    unseen_tasks = [
        _UnseenTask(
            b, str(shuffle), str(labels_dir), str(back), str(seen_items), drop, n_users, n_items
        )
        for b in range(buckets)
    ]
    unseen: dict[int, dict[str, int]] = {}
    unseen_items: dict[int, np.ndarray] = {}
    for outcome in run(_unseen_bucket, unseen_tasks):
        for label, stats in outcome.stats.items():
            total = unseen.setdefault(label, {})
            for key, value in stats.items():
                total[key] = total.get(key, 0) + value
            unseen_items[label] = np.union1d(
                unseen_items.get(label, np.zeros(0, dtype=np.int32)), outcome.unseen_items[label]
            )
    for label, items in unseen_items.items():
        unseen[label]["unseen_items"] = int(items.size)
    shutil.rmtree(shuffle, ignore_errors=True)

    present = {TRAIN, TEST}
    if isinstance(spec, LeaveLastOut) and spec.validation:
        present.add(VALIDATION)
    if drop:
        present.add(DROPPED)
    names = [name for name in PART_NAMES if _LABELS[name] in present]
    fingerprint = fingerprint_stream(
        source.columns, source.rows, source.read_column, source.user_ids, source.item_ids
    )
    counts: dict[str, PartCounts] = {}
    with atomic_directory(destination) as tmp:
        write_tasks = [
            _WriteTask(
                p,
                str(back),
                {
                    _LABELS[name]: str(tmp / name / "interactions.parquet" / part_name(p.index))
                    for name in names
                },
                n_users,
                n_items,
            )
            for p in source.parts
        ]
        rows = dict.fromkeys(present, 0)
        active_users = {label: np.zeros(n_users, dtype=bool) for label in present}
        active_items = {label: np.zeros(n_items, dtype=bool) for label in present}
        for result in run(_write_part, write_tasks):
            for label, (n, part_users, part_items) in result.items():
                rows[label] += n
                active_users[label] |= part_users
                active_items[label] |= part_items
        for name in names:
            label = _LABELS[name]
            counts[name] = PartCounts(
                rows=rows[label],
                users=int(np.count_nonzero(active_users[label])),
                items=int(np.count_nonzero(active_items[label])),
                **unseen.get(label, {}),
            )
            write_table(pa.table({"id": source.user_ids}), tmp / name / "users.parquet")
            write_table(pa.table({"id": source.item_ids}), tmp / name / "items.parquet")
            write_sidecar(
                tmp / name, source.metadata, rows[label], n_users, n_items, source.columns
            )
        info = SourceInfo(
            name=source.metadata.name,
            fingerprint=fingerprint,
            rows=source.rows,
            users=n_users,
            items=n_items,
        )
        manifest = {
            "format": "privrank-split",
            "version": 1,
            "protocol": spec.protocol,
            "seed": getattr(spec, "seed", None),
            "spec": spec.model_dump(mode="json"),
            "source": asdict(info),
            "parts": {name: asdict(c) for name, c in counts.items()},
            "details": details,
        }
        (tmp / "split.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return RaySplitResult(destination, spec, counts, info, details)
