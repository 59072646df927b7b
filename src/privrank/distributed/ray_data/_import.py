"""``privrank data import --engine ray``: read, validate, curate and save on Ray Data.

The result is the dataset :func:`privrank.data.readers.read_interactions` followed by
:func:`privrank.data.curation.curate` would give on the same input — the same rows in the same
order, the same codes and id maps, hence the same fingerprint, and the same curation record —
computed in passes over partitions so that no process ever holds the whole data:

1. **read** (a task per partition): parse and validate with the single-process readers (a
   text file is one partition; a Parquet file is cut along its row groups, rows numbered from
   the start of the file), write the typed rows to staging, return the partition's distinct
   users and items. A bad row fails the import with the single-process message (file, line or
   row, column, field, value, expected); nothing is written.
2. The driver merges the distinct ids into the sorted vocabularies (codes are assigned in
   sorted id order, as :func:`~privrank.data.interactions.encode_ids` does).
3. **encode** (a task per partition): ids to codes; returns per-user and per-item counts.
4. **curation on counts.** The iterated k-core is a function of per-user and per-item *alive
   flags* only: a row is present after round ``r`` exactly when its user and its item passed
   every round up to ``r``, so each round is one counting pass over the partitions with the
   current flags, and the driver keeps ``O(users + items)`` memory. ``min_per_user`` is one
   more flag. The contribution bound (``max_per_user``) depends on the order of a user's rows
   (the most recent ``n``, or ``n`` chosen by keys hashing the seed, the user code and the
   row's rank): the rows of capped users are shuffled into user buckets and the single-process
   :func:`~privrank.data.curation.cap_keep_mask` decides each bucket
   (:mod:`privrank.distributed.ray_data._buckets`), which is exact because a user's choice
   depends only on that user's rows, in global-position order.
5. **write** (a task per partition): filter, re-densify codes (``compact``), write one Parquet
   part per partition in input order under ``interactions.parquet/``.

The output is a directory like :meth:`~privrank.data.interactions.Interactions.save`'s, except
that ``interactions.parquet`` is a directory of parts (``part-00000.parquet``, ...), which
:meth:`Interactions.load` and pyarrow read as one table in part order. It is built under a
temporary name and renamed into place.

Supported: the formats whose lines are independent rows (``ml-100k``, ``ml-1m``, ``ml-csv``,
``csv``, ``tsv``, ``parquet``; a directory of Parquet files is read as one input, files in name
order), ``on_error="strict"``, and the curation steps ``k_core``, ``min_per_user``,
``max_per_user`` and ``compact``. Others are refused with a :class:`ConfigError` naming them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from privrank.atomic import atomic_directory
from privrank.data.curation import CurationConfig, MaxPerUser, cap_keep_mask
from privrank.data.interactions import CurationStep, DatasetMetadata, Interactions
from privrank.data.readers import ReadOptions, read_interactions
from privrank.data.readers._source import digest_file
from privrank.data.readers.tabular import read_parquet
from privrank.distributed.ray_data._buckets import (
    gather_labels,
    load_bucket,
    scatter_rows,
    write_back,
)
from privrank.distributed.ray_data._options import RayDataOptions
from privrank.distributed.ray_data._parts import (
    Part,
    load_array,
    parquet_parts,
    part_name,
    read_columns,
    save_array,
    write_table,
)
from privrank.distributed.ray_data._runtime import map_partitions, ray_runtime
from privrank.errors import ConfigError, DataError, PrivrankError

__all__ = ["RayImportResult", "import_on_ray"]

#: Formats whose lines are independent rows (``sequences``/``pairs`` derive time from position).
RAY_FORMATS = ("ml-100k", "ml-1m", "ml-csv", "csv", "tsv", "parquet")
_COLUMNS = ("user", "item", "timestamp", "value")
_TYPES = {"user": pa.int32(), "item": pa.int32(), "timestamp": pa.int64(), "value": pa.float32()}


@dataclass(frozen=True)
class RayImportResult:
    """What :func:`import_on_ray` wrote.

    Attributes:
        path: The dataset directory.
        metadata: Its provenance and curation record (as the single-process import's).
        rows: Interactions written.
        users: Size of the user vocabulary.
        items: Size of the item vocabulary.
        parts: Parquet parts written.
    """

    path: Path
    metadata: DatasetMetadata
    rows: int
    users: int
    items: int
    parts: int


def import_on_ray(
    source: str | Path,
    options: ReadOptions,
    destination: str | Path,
    *,
    curation: CurationConfig | None = None,
    engine: RayDataOptions | None = None,
    verify_sha256: Callable[[str], None] | None = None,
) -> RayImportResult:
    """Read, validate and curate interactions on Ray Data; save them as a partitioned dataset.

    Args:
        source: A file, or a directory of Parquet files (read in name order as one input).
        options: How to read it (strict only).
        destination: The dataset directory to write (replaced atomically).
        curation: Curation steps (``k_core``, ``min_per_user``, ``max_per_user``, ``compact``).
        engine: Where and how Ray runs.
        verify_sha256: Called with the source's SHA-256 before anything is written; raises to
            refuse it (catalog data sets check the pinned checksum).

    Returns:
        What was written.

    Raises:
        DataError: A missing file or any bad row (file, line or row, column, value, expected).
        ConfigError: A format, error policy or curation step the engine does not support.
    """
    engine = engine or RayDataOptions()
    source = Path(source)
    _check_supported(options, curation)
    files = _source_files(source, options)
    destination = Path(destination)
    staging_root = engine.staging_dir or destination.parent
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.staging-", dir=staging_root))
    try:
        with ray_runtime(
            engine.address, num_cpus=engine.num_cpus, object_store_bytes=engine.object_store_bytes
        ):
            return _Import(source, files, options, curation, engine, staging).run(
                destination, verify_sha256
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -------------------------------------------------------------------- checks
def _check_supported(options: ReadOptions, curation: CurationConfig | None) -> None:
    if options.format not in RAY_FORMATS:
        raise ConfigError(
            f"--engine ray: format {options.format!r} is not supported (its timestamps are line "
            f"positions within a user's history); supported: {', '.join(RAY_FORMATS)}"
        )
    if options.on_error != "strict":
        raise ConfigError(
            "--engine ray: --on-error quarantine is not supported; use --engine local, or "
            "fix the file (strict mode names every bad line)"
        )
    if curation is None:
        return
    refused = []
    if curation.time_window is not None:
        refused.append("--since/--until")
    if curation.duplicates != "keep":
        refused.append("--duplicates")
    if curation.threshold is not None:
        refused.append("--min-value/--binarize")
    if refused:
        raise ConfigError(
            f"--engine ray: {', '.join(refused)} not supported; the Ray engine curates with "
            "--k-core, --min-per-user and --max-per-user (use --engine local for the others)"
        )


def _source_files(source: Path, options: ReadOptions) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.parquet") if p.is_file())
        if options.format != "parquet" or not files:
            raise DataError(
                "cannot read interactions: a directory",
                path=source,
                expected="a file, or a directory of Parquet files with --format parquet",
            )
        return files
    raise DataError("cannot read interactions: no such file", path=source, expected="a file")


# -------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class _ReadTask:
    part: Part
    options: ReadOptions
    out: str


@dataclass
class _ReadOutcome:
    index: int
    rows: int
    source_rows: int
    sha256: str | None
    users: pa.Array | None
    items: pa.Array | None
    error: PrivrankError | None = None


def _read_part(task: _ReadTask) -> _ReadOutcome:
    part, options = task.part, task.options
    path = Path(part.path)
    if options.format == "parquet":
        columns, report = read_parquet(
            path, options, collect=True, row_groups=list(part.row_groups or ())
        )
        if not report.ok or columns is None:
            return _ReadOutcome(part.index, 0, 0, None, None, None, report.error())
        table = pa.table({k: _single(v) for k, v in columns.items()})
        if "value" in table.column_names:
            table = table.set_column(
                table.column_names.index("value"),
                "value",
                table.column("value").cast(pa.float32(), safe=False),
            )
        sha = digest_file(path, check_utf8=False).sha256 if part.first_of_file else None
        source_rows = report.source_rows
    else:
        try:
            result = read_interactions(path, options)
        except DataError as exc:
            return _ReadOutcome(part.index, 0, 0, None, None, None, exc)
        data = result.interactions
        table_columns: dict[str, Any] = {
            "user": data.user_ids.take(pa.array(data.users())),
            "item": data.item_ids.take(pa.array(data.items())),
        }
        if data.has_timestamps:
            table_columns["timestamp"] = pa.array(data.timestamps())
        if data.has_values:
            table_columns["value"] = pa.array(data.values())
        table = pa.table(table_columns)
        sha = data.metadata.source_sha256
        source_rows = result.source_rows
    write_table(table, Path(task.out))
    return _ReadOutcome(
        part.index,
        table.num_rows,
        source_rows,
        sha,
        _distinct(table.column("user")),
        _distinct(table.column("item")),
    )


@dataclass(frozen=True)
class _EncodeTask:
    raw: str
    out: str
    users: str
    items: str
    n_users: int
    n_items: int


def _encode_part(task: _EncodeTask) -> tuple[np.ndarray, np.ndarray]:
    table = read_columns(task.raw)
    users = _codes(table.column("user"), read_columns(task.users).column("id"))
    items = _codes(table.column("item"), read_columns(task.items).column("id"))
    columns: dict[str, Any] = {"user": users, "item": items}
    for name in ("timestamp", "value"):
        if name in table.column_names:
            columns[name] = table.column(name).cast(_TYPES[name])
    write_table(pa.table(columns), Path(task.out))
    Path(task.raw).unlink()
    return (
        np.bincount(users, minlength=task.n_users),
        np.bincount(items, minlength=task.n_items),
    )


@dataclass(frozen=True)
class _CountTask:
    codes: str
    alive_users: str
    alive_items: str
    n_users: int
    n_items: int


def _count_part(task: _CountTask) -> tuple[np.ndarray, np.ndarray]:
    table = read_columns(task.codes, ["user", "item"])
    users = table.column("user").to_numpy()
    items = table.column("item").to_numpy()
    present = load_array(task.alive_users)[users] & load_array(task.alive_items)[items]
    return (
        np.bincount(users[present], minlength=task.n_users),
        np.bincount(items[present], minlength=task.n_items),
    )


@dataclass(frozen=True)
class _ScatterTask:
    part: Part
    codes: str
    alive_users: str
    alive_items: str
    selected_users: str
    shuffle: str
    buckets: int


def _scatter_part(task: _ScatterTask) -> int:
    table = read_columns(task.codes)
    users = table.column("user").to_numpy()
    items = table.column("item").to_numpy()
    timestamps = table.column("timestamp").to_numpy() if "timestamp" in table.column_names else None
    chosen = (
        load_array(task.alive_users)[users]
        & load_array(task.alive_items)[items]
        & load_array(task.selected_users)[users]
    )
    return scatter_rows(
        Path(task.shuffle), task.part, task.buckets, users, items, timestamps, chosen
    )


@dataclass(frozen=True)
class _CapTask:
    bucket: int
    shuffle: str
    back: str
    cap: MaxPerUser
    n_users: int


def _cap_bucket(task: _CapTask) -> int:
    rows = load_bucket(Path(task.shuffle), task.bucket)
    data = Interactions.from_codes(
        rows.users,
        np.zeros(len(rows.users), dtype=np.int32),
        n_users=task.n_users,
        n_items=1,
        timestamps=rows.timestamps,
    )
    keep = cap_keep_mask(data, task.cap)
    write_back(Path(task.back), task.bucket, rows, keep)
    return int(np.count_nonzero(~keep))


@dataclass(frozen=True)
class _WriteTask:
    part: Part
    codes: str
    alive_users: str
    alive_items: str
    user_map: str
    item_map: str
    back: str | None
    out: str


def _write_part(task: _WriteTask) -> tuple[int, np.ndarray, np.ndarray]:
    table = read_columns(task.codes)
    users = table.column("user").to_numpy()
    items = table.column("item").to_numpy()
    keep = load_array(task.alive_users)[users] & load_array(task.alive_items)[items]
    if task.back is not None:
        keep &= gather_labels(Path(task.back), task.part, np.ones(len(users), dtype=bool))
    user_map, item_map = load_array(task.user_map), load_array(task.item_map)
    rows = np.flatnonzero(keep)
    kept_users, kept_items = users[rows], items[rows]
    columns: dict[str, Any] = {
        "user": pa.array(user_map[kept_users]),
        "item": pa.array(item_map[kept_items]),
    }
    for name in ("timestamp", "value"):
        if name in table.column_names:
            columns[name] = table.column(name).take(pa.array(rows))
    write_table(pa.table(columns), Path(task.out))
    return (
        len(rows),
        np.bincount(kept_users, minlength=len(user_map)),
        np.bincount(kept_items, minlength=len(item_map)),
    )


# -------------------------------------------------------------------- the driver
class _Import:
    """The passes of one import; holds only per-user and per-item arrays."""

    def __init__(
        self,
        source: Path,
        files: list[Path],
        options: ReadOptions,
        curation: CurationConfig | None,
        engine: RayDataOptions,
        staging: Path,
    ) -> None:
        self.source = source
        self.files = files
        self.options = options
        self.curation = curation
        self.engine = engine
        self.staging = staging
        self.steps: list[CurationStep] = []

    def _map(self, function: Any, tasks: list[Any]) -> Any:
        return map_partitions(function, tasks, max_parallel=self.engine.max_parallel)

    def run(
        self, destination: Path, verify_sha256: Callable[[str], None] | None
    ) -> RayImportResult:
        parts, metadata = self._read(verify_sha256)
        counts_u, counts_i = self._encode(parts)
        alive_u = np.ones(self.n_users, dtype=bool)
        alive_i = np.ones(self.n_items, dtype=bool)
        back = None
        config = self.curation or CurationConfig(compact=False)
        if config.k_core is not None:
            counts_u, counts_i = self._k_core(
                parts,
                config.k_core.user_k,
                config.k_core.item_k,
                counts_u,
                counts_i,
                alive_u,
                alive_i,
            )
        if config.min_per_user is not None:
            counts_u, counts_i = self._min_per_user(
                parts, config.min_per_user, counts_u, counts_i, alive_u, alive_i
            )
        if config.max_per_user is not None:
            counts_u, counts_i, back = self._max_per_user(
                parts, config.max_per_user, counts_u, counts_i, alive_u, alive_i
            )
        if config.compact:
            user_keep, item_keep = counts_u > 0, counts_i > 0
            self._record(
                "compact",
                {},
                counts_u,
                counts_i,
                counts_u,
                counts_i,
                {
                    "users_dropped": int(self.n_users - np.count_nonzero(user_keep)),
                    "items_dropped": int(self.n_items - np.count_nonzero(item_keep)),
                },
            )
        else:
            user_keep = np.ones(self.n_users, dtype=bool)
            item_keep = np.ones(self.n_items, dtype=bool)
        metadata = DatasetMetadata(**{**asdict(metadata), "curation": tuple(self.steps)})
        return self._write(
            destination, parts, metadata, alive_u, alive_i, user_keep, item_keep, back
        )

    # ---------------------------------------------------------------- read and encode
    def _read(
        self, verify_sha256: Callable[[str], None] | None
    ) -> tuple[list[Part], DatasetMetadata]:
        if self.options.format == "parquet":
            parts = parquet_parts(self.files, self.engine.part_rows)
        else:
            parts = [Part(0, str(self.files[0]), None, 0, None, True)]
        if not parts:
            raise DataError("no rows", path=self.source, expected="at least one row")
        raw = self.staging / "raw"
        tasks = [_ReadTask(p, self.options, str(raw / part_name(p.index))) for p in parts]
        outcomes: list[_ReadOutcome] = []
        user_ids = item_ids = None
        for outcome in self._map(_read_part, tasks):  # vocabularies merged as results arrive
            if outcome.error is None:
                user_ids = _merge(user_ids, outcome.users, "user", self.source)
                item_ids = _merge(item_ids, outcome.items, "item", self.source)
            outcome.users = outcome.items = None
            outcomes.append(outcome)
        outcomes.sort(key=lambda o: o.index)
        for outcome in outcomes:  # the first bad partition in row order
            if outcome.error is not None:
                raise outcome.error
        assert user_ids is not None and item_ids is not None
        self.user_ids, self.item_ids = user_ids, item_ids
        self.n_users, self.n_items = len(user_ids), len(item_ids)
        start = 0
        placed = []
        for part, outcome in zip(parts, outcomes, strict=True):
            placed.append(
                Part(
                    part.index, part.path, part.row_groups, start, outcome.rows, part.first_of_file
                )
            )
            start += outcome.rows
        self.columns = [
            name for name in _COLUMNS if name in read_columns(raw / part_name(0)).column_names
        ]
        hashes = [(p.path, o.sha256) for p, o in zip(parts, outcomes, strict=True) if o.sha256]
        if len(self.files) == 1:
            sha256 = hashes[0][1]
        else:  # a directory: the SHA-256 of its files' names and SHA-256s, in name order
            listing = "".join(
                f"{Path(path).relative_to(self.source)}\t{sha}\n" for path, sha in hashes
            )
            sha256 = hashlib.sha256(listing.encode()).hexdigest()
        if verify_sha256 is not None:
            verify_sha256(sha256)
        metadata = DatasetMetadata(
            name=self.options.name or self.source.stem,
            source_path=str(self.source.resolve()),
            source_sha256=sha256,
            source_format=self.options.format,
            source_rows=sum(o.source_rows for o in outcomes),
            rejected_rows=0,
        )
        return placed, metadata

    def _encode(self, parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
        write_table(pa.table({"id": self.user_ids}), self.staging / "users.parquet")
        write_table(pa.table({"id": self.item_ids}), self.staging / "items.parquet")
        tasks = [
            _EncodeTask(
                str(self.staging / "raw" / part_name(p.index)),
                str(self.staging / "codes" / part_name(p.index)),
                str(self.staging / "users.parquet"),
                str(self.staging / "items.parquet"),
                self.n_users,
                self.n_items,
            )
            for p in parts
        ]
        return self._sum(self._map(_encode_part, tasks))

    # ---------------------------------------------------------------- curation
    def _count(
        self, parts: list[Part], alive_u: np.ndarray, alive_i: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        users_path, items_path = self._flags(alive_u, alive_i)
        tasks = [
            _CountTask(self._codes(p), users_path, items_path, self.n_users, self.n_items)
            for p in parts
        ]
        return self._sum(self._map(_count_part, tasks))

    def _k_core(self, parts, user_k, item_k, counts_u, counts_i, alive_u, alive_i):
        before_u, before_i = counts_u, counts_i
        iterations = 0
        while counts_u.sum():
            ok_u, ok_i = counts_u >= user_k, counts_i >= item_k
            if not (np.any((counts_u > 0) & ~ok_u) or np.any((counts_i > 0) & ~ok_i)):
                break
            alive_u &= ok_u
            alive_i &= ok_i
            iterations += 1
            counts_u, counts_i = self._count(parts, alive_u, alive_i)
        self._record(
            "k_core",
            {"user_k": user_k, "item_k": item_k},
            before_u,
            before_i,
            counts_u,
            counts_i,
            {"iterations": iterations},
        )
        return counts_u, counts_i

    def _min_per_user(self, parts, n, counts_u, counts_i, alive_u, alive_i):
        keep = counts_u >= n
        after_u, after_i = counts_u, counts_i
        if np.any((counts_u > 0) & ~keep):
            alive_u &= keep
            after_u, after_i = self._count(parts, alive_u, alive_i)
        self._record("min_per_user", {"n": int(n)}, counts_u, counts_i, after_u, after_i, {})
        return after_u, after_i

    def _max_per_user(self, parts, cap: MaxPerUser, counts_u, counts_i, alive_u, alive_i):
        capped = counts_u > cap.n
        details = {
            "users_capped": int(np.count_nonzero(capped)),
            "max_rows_per_user": int(np.minimum(counts_u, cap.n).max(initial=0)),
        }
        params = cap.model_dump()
        if cap.strategy == "most_recent":
            params.pop("seed")
        if not capped.any():
            self._record("max_per_user", params, counts_u, counts_i, counts_u, counts_i, details)
            return counts_u, counts_i, None
        users_path, items_path = self._flags(alive_u, alive_i)
        selected = self.staging / "capped_users.npy"
        save_array(capped, selected)
        shuffle, back = self.staging / "cap-shuffle", self.staging / "cap-back"
        capped_rows = int(counts_u[capped].sum())
        buckets = max(1, -(-capped_rows // self.engine.part_rows))
        scatter = [
            _ScatterTask(
                p, self._codes(p), users_path, items_path, str(selected), str(shuffle), buckets
            )
            for p in parts
        ]
        for _ in self._map(_scatter_part, scatter):
            pass
        tasks = [_CapTask(b, str(shuffle), str(back), cap, self.n_users) for b in range(buckets)]
        for _ in self._map(_cap_bucket, tasks):
            pass
        shutil.rmtree(shuffle, ignore_errors=True)
        after_u = np.minimum(counts_u, cap.n)
        after_i = self._items_after_cap(parts, users_path, items_path, back)
        self._record("max_per_user", params, counts_u, counts_i, after_u, after_i, details)
        return after_u, after_i, back

    def _items_after_cap(self, parts, users_path, items_path, back) -> np.ndarray:
        tasks = [
            _CapCountTask(self._codes(p), p, users_path, items_path, str(back), self.n_items)
            for p in parts
        ]
        total = np.zeros(self.n_items, dtype=np.int64)
        for counts in self._map(_count_after_cap, tasks):
            total += counts
        return total

    def _record(self, name, params, before_u, before_i, after_u, after_i, details) -> None:
        removed = {
            "users_removed": int(np.count_nonzero(before_u) - np.count_nonzero(after_u)),
            "items_removed": int(np.count_nonzero(before_i) - np.count_nonzero(after_i)),
        }
        self.steps.append(
            CurationStep(
                name=name,
                params=params,
                rows_before=int(before_u.sum()),
                rows_after=int(after_u.sum()),
                details=removed | details,
            )
        )

    # ---------------------------------------------------------------- write
    def _write(
        self, destination, parts, metadata, alive_u, alive_i, user_keep, item_keep, back
    ) -> RayImportResult:
        users_path, items_path = self._flags(alive_u, alive_i)
        user_map = (np.cumsum(user_keep, dtype=np.int64) - 1).astype(np.int32)
        item_map = (np.cumsum(item_keep, dtype=np.int64) - 1).astype(np.int32)
        save_array(user_map, self.staging / "user_map.npy")
        save_array(item_map, self.staging / "item_map.npy")
        user_ids = self.user_ids.filter(pa.array(user_keep))
        item_ids = self.item_ids.filter(pa.array(item_keep))
        with atomic_directory(destination) as tmp:
            table_dir = tmp / "interactions.parquet"
            tasks = [
                _WriteTask(
                    p,
                    self._codes(p),
                    users_path,
                    items_path,
                    str(self.staging / "user_map.npy"),
                    str(self.staging / "item_map.npy"),
                    None if back is None else str(back),
                    str(table_dir / part_name(p.index)),
                )
                for p in parts
            ]
            rows = 0
            for written, _, _ in self._map(_write_part, tasks):
                rows += written
            write_table(pa.table({"id": user_ids}), tmp / "users.parquet")
            write_table(pa.table({"id": item_ids}), tmp / "items.parquet")
            write_sidecar(tmp, metadata, rows, len(user_ids), len(item_ids), self.columns)
        return RayImportResult(
            destination, metadata, rows, len(user_ids), len(item_ids), len(parts)
        )

    # ---------------------------------------------------------------- helpers
    def _codes(self, part: Part) -> str:
        return str(self.staging / "codes" / part_name(part.index))

    def _flags(self, alive_u: np.ndarray, alive_i: np.ndarray) -> tuple[str, str]:
        self._round = getattr(self, "_round", 0) + 1
        users_path = self.staging / "flags" / f"users-{self._round}.npy"
        items_path = self.staging / "flags" / f"items-{self._round}.npy"
        save_array(alive_u, users_path)
        save_array(alive_i, items_path)
        return str(users_path), str(items_path)

    def _sum(self, results: Any) -> tuple[np.ndarray, np.ndarray]:
        total_u = np.zeros(self.n_users, dtype=np.int64)
        total_i = np.zeros(self.n_items, dtype=np.int64)
        for counts_u, counts_i in results:
            total_u += counts_u
            total_i += counts_i
        return total_u, total_i


@dataclass(frozen=True)
class _CapCountTask:
    codes: str
    part: Part
    alive_users: str
    alive_items: str
    back: str
    n_items: int


def _count_after_cap(task: _CapCountTask) -> np.ndarray:
    table = read_columns(task.codes, ["user", "item"])
    users = table.column("user").to_numpy()
    items = table.column("item").to_numpy()
    keep = load_array(task.alive_users)[users] & load_array(task.alive_items)[items]
    keep &= gather_labels(Path(task.back), task.part, np.ones(len(users), dtype=bool))
    return np.bincount(items[keep], minlength=task.n_items)


# -------------------------------------------------------------------- shared helpers
def write_sidecar(
    directory: Path,
    metadata: DatasetMetadata,
    rows: int,
    users: int,
    items: int,
    columns: list[str],
) -> None:
    """``metadata.json`` as :meth:`Interactions.save` writes it."""
    sidecar = {
        "metadata": metadata.to_json(),
        "counts": {"interactions": rows, "users": users, "items": items},
        "columns": columns,
    }
    (directory / "metadata.json").write_text(json.dumps(sidecar, indent=2, default=str) + "\n")


def _single(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    return column


def _distinct(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    unique = pc.unique(column)
    if isinstance(unique, pa.ChunkedArray):
        unique = unique.combine_chunks()
    return unique.take(pc.array_sort_indices(unique))


def _merge(
    merged: pa.Array | None, new: pa.Array | None, role: str, source: Path
) -> pa.Array | None:
    """The sorted union of two sorted vocabularies (ids of one type in every partition)."""
    if new is None:
        return merged
    if merged is None:
        return new.cast(pa.int64()) if pa.types.is_integer(new.type) else new.cast(pa.string())
    if (
        len(new)
        and len(merged)
        and (pa.types.is_integer(new.type) != pa.types.is_integer(merged.type))
    ):
        raise DataError(
            f"{role} ids are integers in some partitions and text in others",
            path=source,
            field=role,
            expected="one id type in every file (pass --id-type str for text ids)",
        )
    if pa.types.is_integer(merged.type):
        union = np.union1d(merged.to_numpy(), new.cast(pa.int64()).to_numpy())
        return pa.array(union, type=pa.int64())
    return _distinct(pa.chunked_array([merged, new.cast(pa.string())]))


def _codes(ids: pa.ChunkedArray, vocabulary: pa.ChunkedArray) -> np.ndarray:
    vocab = vocabulary.combine_chunks()
    if pa.types.is_integer(vocab.type):
        return np.searchsorted(vocab.to_numpy(), ids.to_numpy()).astype(np.int32)
    codes = pc.index_in(ids, value_set=vocab)
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int32)
