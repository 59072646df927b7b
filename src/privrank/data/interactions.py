"""The interaction data model: who interacted with what, when, and how much.

An :class:`Interactions` holds one row per interaction in an Arrow table with dense integer codes
(``user``, ``item``: int32, ``0 <= code < n``), an optional ``timestamp`` (int64, seconds since
the Unix epoch) and an optional ``value`` (float32: a rating, a count, a weight). Two id maps turn
codes back into the external ids the data came with (``user_ids[code]``), and the
:class:`DatasetMetadata` records where the data came from and every curation step applied to it.

Codes are assigned in sorted order of the external ids, so the same input always gives the same
codes. Filtering rows keeps the id maps (so train and test of a split share one vocabulary);
:meth:`Interactions.compact` drops ids that no longer occur and re-densifies the codes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from privrank.atomic import atomic_directory
from privrank.errors import ArtifactError, DataError

__all__ = [
    "SCHEMA_VERSION",
    "CurationStep",
    "DatasetMetadata",
    "Interactions",
    "encode_ids",
]

SCHEMA_VERSION = 1
_TABLE_FILE = "interactions.parquet"
_USERS_FILE = "users.parquet"
_ITEMS_FILE = "items.parquet"
_META_FILE = "metadata.json"


@dataclass(frozen=True)
class CurationStep:
    """One step applied to a dataset and what it removed.

    Attributes:
        name: Step name, e.g. ``k_core`` or ``max_per_user``.
        params: The step's parameters, JSON-serialisable.
        rows_before: Interactions before the step.
        rows_after: Interactions after the step.
        details: Extra counts the step reports (users removed, iterations, ...).
    """

    name: str
    params: dict[str, Any]
    rows_before: int
    rows_after: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def removed(self) -> int:
        """Number of interactions the step removed (negative if it added rows)."""
        return self.rows_before - self.rows_after


@dataclass(frozen=True)
class DatasetMetadata:
    """Provenance of a dataset: source, checksums, counts and curation history.

    Attributes:
        name: A human-readable name (``ml-100k``, a file stem, ...).
        source_path: The file the data was read from, if any.
        source_sha256: SHA-256 of that file's bytes, if known.
        source_format: The reader that parsed it (``ml-100k``, ``csv``, ...).
        source_rows: Data rows in the source file (after any header).
        rejected_rows: Rows rejected under ``--on-error quarantine`` (0 in strict mode).
        curation: Every curation step applied, in order.
        schema_version: Version of the on-disk layout.
    """

    name: str = "unnamed"
    source_path: str | None = None
    source_sha256: str | None = None
    source_format: str | None = None
    source_rows: int | None = None
    rejected_rows: int = 0
    curation: tuple[CurationStep, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def with_step(self, step: CurationStep) -> DatasetMetadata:
        """Return a copy with ``step`` appended to the curation history."""
        return replace(self, curation=(*self.curation, step))

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        out = asdict(self)
        out["curation"] = [asdict(s) | {"removed": s.removed} for s in self.curation]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetMetadata:
        """Inverse of :meth:`to_json`."""
        steps = tuple(
            CurationStep(
                name=s["name"],
                params=s["params"],
                rows_before=s["rows_before"],
                rows_after=s["rows_after"],
                details=s.get("details", {}),
            )
            for s in data.get("curation", [])
        )
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["curation"] = steps
        return cls(**fields)


def encode_ids(ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Map external ids to dense int32 codes in sorted id order.

    Args:
        ids: External ids (integers or strings), no nulls.

    Returns:
        ``(codes, vocabulary)`` where ``vocabulary[codes[i]] == ids[i]`` and ``vocabulary`` is
        sorted ascending with no duplicates.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if ids.null_count:
        raise DataError("missing id", value=None, expected="no null ids")
    vocabulary = pc.unique(ids)
    vocabulary = vocabulary.take(pc.array_sort_indices(vocabulary))
    codes = pc.index_in(ids, value_set=vocabulary)
    return codes.to_numpy(zero_copy_only=False).astype(np.int32, copy=False), vocabulary


class Interactions:
    """A set of user-item interactions with dense codes, id maps and provenance.

    Construct with :meth:`from_columns` (external ids) or :meth:`from_codes` (codes already
    dense); never mutate: every operation returns a new object.

    Attributes:
        table: Arrow table with columns ``user`` (int32), ``item`` (int32) and, when present,
            ``timestamp`` (int64) and ``value`` (float32).
        user_ids: External user ids, indexed by code.
        item_ids: External item ids, indexed by code.
        metadata: Provenance and curation history.
    """

    def __init__(
        self,
        table: pa.Table,
        user_ids: pa.Array,
        item_ids: pa.Array,
        metadata: DatasetMetadata | None = None,
    ) -> None:
        self.table = _normalise_table(table)
        self.user_ids = user_ids
        self.item_ids = item_ids
        self.metadata = metadata or DatasetMetadata()
        self._check_codes()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_columns(
        cls,
        users: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray,
        items: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray,
        timestamps: Sequence[int] | np.ndarray | pa.Array | pa.ChunkedArray | None = None,
        values: Sequence[float] | np.ndarray | pa.Array | pa.ChunkedArray | None = None,
        metadata: DatasetMetadata | None = None,
    ) -> Interactions:
        """Build from external ids, assigning dense codes in sorted id order."""
        user_codes, user_ids = encode_ids(_as_arrow(users))
        item_codes, item_ids = encode_ids(_as_arrow(items))
        columns: dict[str, Any] = {"user": user_codes, "item": item_codes}
        if timestamps is not None:
            columns["timestamp"] = _as_arrow(timestamps).cast(pa.int64())
        if values is not None:
            columns["value"] = _as_arrow(values).cast(pa.float32())
        return cls(pa.table(columns), user_ids, item_ids, metadata)

    @classmethod
    def from_codes(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        timestamps: np.ndarray | None = None,
        values: np.ndarray | None = None,
        metadata: DatasetMetadata | None = None,
    ) -> Interactions:
        """Build from dense codes; external ids are the codes themselves (``0..n-1``)."""
        users = np.asarray(users, dtype=np.int32)
        items = np.asarray(items, dtype=np.int32)
        n_users = int(users.max(initial=-1)) + 1 if n_users is None else n_users
        n_items = int(items.max(initial=-1)) + 1 if n_items is None else n_items
        columns: dict[str, Any] = {"user": users, "item": items}
        if timestamps is not None:
            columns["timestamp"] = np.asarray(timestamps, dtype=np.int64)
        if values is not None:
            columns["value"] = np.asarray(values, dtype=np.float32)
        return cls(
            pa.table(columns),
            pa.array(np.arange(n_users, dtype=np.int64)),
            pa.array(np.arange(n_items, dtype=np.int64)),
            metadata,
        )

    # ---------------------------------------------------------------- sizes and columns
    @property
    def n_users(self) -> int:
        """Size of the user vocabulary (including users with no rows after filtering)."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Size of the item vocabulary."""
        return len(self.item_ids)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.table.column_names

    @property
    def has_values(self) -> bool:
        return "value" in self.table.column_names

    def users(self) -> np.ndarray:
        """User codes, one per row (int32)."""
        return _column(self.table, "user")

    def items(self) -> np.ndarray:
        """Item codes, one per row (int32)."""
        return _column(self.table, "item")

    def timestamps(self) -> np.ndarray | None:
        """Timestamps, one per row (int64), or ``None`` if the data has none."""
        return _column(self.table, "timestamp") if self.has_timestamps else None

    def values(self) -> np.ndarray | None:
        """Values, one per row (float32), or ``None`` if the data has none."""
        return _column(self.table, "value") if self.has_values else None

    def n_active_users(self) -> int:
        """Number of users with at least one row."""
        return int(np.count_nonzero(np.bincount(self.users(), minlength=self.n_users)))

    def n_active_items(self) -> int:
        """Number of items with at least one row."""
        return int(np.count_nonzero(np.bincount(self.items(), minlength=self.n_items)))

    def user_counts(self) -> np.ndarray:
        """Rows per user code (length ``n_users``)."""
        return np.bincount(self.users(), minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Rows per item code (length ``n_items``)."""
        return np.bincount(self.items(), minlength=self.n_items)

    # ---------------------------------------------------------------- id maps
    def user_codes_of(self, external_ids: Sequence[Any]) -> np.ndarray:
        """Codes of external user ids; ``-1`` for ids not in the vocabulary."""
        return _lookup(self.user_ids, external_ids)

    def item_codes_of(self, external_ids: Sequence[Any]) -> np.ndarray:
        """Codes of external item ids; ``-1`` for ids not in the vocabulary."""
        return _lookup(self.item_ids, external_ids)

    # ---------------------------------------------------------------- views
    def to_csr(self, *, use_values: bool = False, dtype: Any = np.float32) -> sp.csr_matrix:
        """The ``n_users × n_items`` matrix of interactions.

        Args:
            use_values: Sum the ``value`` column into the cells; otherwise each row adds 1.
            dtype: Cell dtype.

        Returns:
            A CSR matrix with sorted indices. Duplicate (user, item) rows are summed.
        """
        values = self.values() if use_values else None
        data = (
            values.astype(dtype, copy=False)
            if values is not None
            else np.ones(len(self), dtype=dtype)
        )
        matrix = sp.csr_matrix(
            (data, (self.users(), self.items())), shape=(self.n_users, self.n_items), dtype=dtype
        )
        matrix.sum_duplicates()
        return matrix

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-user item sequences in time order, as a ragged array.

        Rows are ordered by user, then timestamp (when present), then their original position
        (a stable sort, so files without timestamps keep their line order).

        Returns:
            ``(indptr, items)``: user ``u``'s sequence is ``items[indptr[u]:indptr[u + 1]]``;
            ``indptr`` has length ``n_users + 1``.
        """
        order = self.sorted_order()
        items = self.items()[order]
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(self.user_counts(), out=indptr[1:])
        return indptr, items

    def sorted_order(self) -> np.ndarray:
        """Row permutation sorting by (user, timestamp, original position), stable."""
        users = self.users()
        timestamps = self.timestamps()
        if timestamps is not None:
            return np.lexsort((timestamps, users))
        return np.argsort(users, kind="stable")

    # ---------------------------------------------------------------- derivation
    def take(self, rows: np.ndarray) -> Interactions:
        """Rows at the given positions (or boolean mask); id maps and metadata are kept."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return Interactions(
            self.table.take(pa.array(rows)), self.user_ids, self.item_ids, self.metadata
        )

    def with_metadata(self, metadata: DatasetMetadata) -> Interactions:
        """The same rows with other metadata."""
        return Interactions(self.table, self.user_ids, self.item_ids, metadata)

    def compact(self) -> Interactions:
        """Drop users and items with no rows and re-densify codes (order of ids is kept)."""
        user_keep = self.user_counts() > 0
        item_keep = self.item_counts() > 0
        if user_keep.all() and item_keep.all():
            return self
        user_map = np.cumsum(user_keep, dtype=np.int64).astype(np.int32) - 1
        item_map = np.cumsum(item_keep, dtype=np.int32) - 1
        table = self.table.set_column(0, "user", pa.array(user_map[self.users()]))
        table = table.set_column(1, "item", pa.array(item_map[self.items()]))
        return Interactions(
            table,
            self.user_ids.filter(pa.array(user_keep)),
            self.item_ids.filter(pa.array(item_keep)),
            self.metadata,
        )

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write Parquet files plus a ``metadata.json`` sidecar, atomically.

        The directory is assembled under a temporary name next to its destination and renamed
        into place, so a crash never leaves a half-written dataset.
        """
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            pq.write_table(self.table, tmp / _TABLE_FILE)
            pq.write_table(pa.table({"id": self.user_ids}), tmp / _USERS_FILE)
            pq.write_table(pa.table({"id": self.item_ids}), tmp / _ITEMS_FILE)
            sidecar = {
                "metadata": self.metadata.to_json(),
                "counts": {
                    "interactions": len(self),
                    "users": self.n_users,
                    "items": self.n_items,
                },
                "columns": self.table.column_names,
            }
            (tmp / _META_FILE).write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Interactions:
        """Read a dataset written by :meth:`save`; checks the schema version and row counts."""
        directory = Path(directory)
        meta_path = directory / _META_FILE
        if not meta_path.is_file():
            raise ArtifactError(f"{directory} is not a privrank dataset: {_META_FILE} is missing")
        try:
            sidecar = json.loads(meta_path.read_text())
            metadata = DatasetMetadata.from_json(sidecar["metadata"])
            table = pq.read_table(directory / _TABLE_FILE)
            user_ids = pq.read_table(directory / _USERS_FILE).column("id").combine_chunks()
            item_ids = pq.read_table(directory / _ITEMS_FILE).column("id").combine_chunks()
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            raise ArtifactError(f"cannot read dataset {directory}: {exc}") from exc
        if metadata.schema_version != SCHEMA_VERSION:
            raise ArtifactError(
                f"{directory}: schema version {metadata.schema_version}, "
                f"this privrank reads version {SCHEMA_VERSION}"
            )
        counts = sidecar.get("counts", {})
        if counts.get("interactions") != table.num_rows:
            raise ArtifactError(
                f"{directory}: {_META_FILE} says {counts.get('interactions')} interactions, "
                f"{_TABLE_FILE} holds {table.num_rows}"
            )
        return cls(table, user_ids, item_ids, metadata)

    def __repr__(self) -> str:
        return (
            f"Interactions(name={self.metadata.name!r}, users={self.n_users}, "
            f"items={self.n_items}, interactions={len(self)}, columns={self.table.column_names})"
        )

    # ---------------------------------------------------------------- checks
    def _check_codes(self) -> None:
        for name, size in (("user", self.n_users), ("item", self.n_items)):
            codes = self.table.column(name)
            if len(codes) == 0:
                continue
            low, high = pc.min_max(codes).values()
            if low.as_py() < 0 or high.as_py() >= size:
                raise DataError(
                    f"{name} codes out of range",
                    value=(low.as_py(), high.as_py()),
                    expected=f"codes in [0, {size})",
                )


# -------------------------------------------------------------------- helpers
_COLUMN_TYPES = {
    "user": pa.int32(),
    "item": pa.int32(),
    "timestamp": pa.int64(),
    "value": pa.float32(),
}


def _normalise_table(table: pa.Table) -> pa.Table:
    unknown = set(table.column_names) - set(_COLUMN_TYPES)
    if unknown or not {"user", "item"} <= set(table.column_names):
        raise DataError(
            "bad interaction table columns",
            value=table.column_names,
            expected="user, item and optionally timestamp, value",
        )
    names = [c for c in _COLUMN_TYPES if c in table.column_names]
    columns = []
    for name in names:
        column = table.column(name)
        if column.null_count:
            raise DataError(f"null values in column {name!r}", expected="no nulls")
        column = column.cast(_COLUMN_TYPES[name])
        # one chunk is used as is: combine_chunks would copy it
        columns.append(column.chunk(0) if column.num_chunks == 1 else column.combine_chunks())
    return pa.table(dict(zip(names, columns, strict=True)))


def _column(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return chunk.to_numpy(zero_copy_only=False)


def _as_arrow(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(np.asarray(values) if not isinstance(values, list) else values)


def _lookup(vocabulary: pa.Array, external_ids: Sequence[Any]) -> np.ndarray:
    query = pa.array(
        list(external_ids) if not isinstance(external_ids, np.ndarray) else external_ids
    )
    if query.type != vocabulary.type:
        try:
            query = query.cast(vocabulary.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return np.full(len(query), -1, dtype=np.int64)
    codes = pc.index_in(query, value_set=vocabulary)
    return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)
