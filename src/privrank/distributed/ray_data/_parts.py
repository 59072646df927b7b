"""Partitions: how the engine cuts its inputs into tasks, and the files tasks exchange.

A :class:`Part` is one task's share of the rows: a whole text file, or consecutive row groups
of a Parquet file. Parts are numbered in row order (files sorted by name, row groups in file
order), and each knows the position of its first row, so a task can name any of its rows by
its global position (its line in the concatenated input) and the output keeps the input's
order.

Staging files (the tasks' intermediate results) live under one directory that every node must
see: a local path on a single machine, a shared volume (NFS, a PersistentVolumeClaim) on a
cluster. Tasks write them with a temporary name and a rename, so a retried task never leaves a
half-written file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from privrank.errors import DataError

__all__ = [
    "Part",
    "load_array",
    "parquet_parts",
    "part_name",
    "read_columns",
    "save_array",
    "write_table",
]

#: Default rows per task when a Parquet file is cut along its row groups.
PART_ROWS = 2_000_000


@dataclass(frozen=True)
class Part:
    """One task's rows.

    Attributes:
        index: Position of the part in row order (0-based).
        path: The file.
        row_groups: The Parquet row groups of the part (``None``: the whole file).
        start: Global position of the part's first row (``None`` until known: text files).
        rows: Rows in the part (``None`` until known).
        first_of_file: Whether the part starts its file (it then also hashes the file).
    """

    index: int
    path: str
    row_groups: tuple[int, ...] | None = None
    start: int | None = None
    rows: int | None = None
    first_of_file: bool = True


def parquet_parts(
    paths: list[Path], part_rows: int = PART_ROWS, first_index: int = 0
) -> list[Part]:
    """Cut Parquet files into parts of about ``part_rows`` rows along their row groups.

    Empty row groups are skipped; a file with no rows gives no part.
    """
    parts: list[Part] = []
    start = 0
    for path in paths:
        try:
            metadata = pq.ParquetFile(path).metadata
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"not a readable Parquet file ({exc})", path=path, expected="a Parquet file"
            ) from exc
        groups: list[int] = []
        rows = 0
        first = True
        for group in range(metadata.num_row_groups):
            size = metadata.row_group(group).num_rows
            if size == 0:
                continue
            groups.append(group)
            rows += size
            if rows >= part_rows:
                parts.append(
                    Part(first_index + len(parts), str(path), tuple(groups), start, rows, first)
                )
                start += rows
                groups, rows, first = [], 0, False
        if groups:
            parts.append(
                Part(first_index + len(parts), str(path), tuple(groups), start, rows, first)
            )
            start += rows
    return parts


def part_name(index: int) -> str:
    """The file name of part ``index``: ``part-00042.parquet`` (sorts in row order)."""
    return f"part-{index:05d}.parquet"


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        pq.write_table(table, tmp, row_group_size=1 << 20)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_columns(path: Path | str, columns: list[str] | None = None) -> pa.Table:
    """Read columns of one staging Parquet file."""
    return pq.read_table(path, columns=columns)


def save_array(array: np.ndarray, path: Path) -> None:
    """Write one NumPy array atomically (``.npy``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
    os.close(handle)
    try:
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_array(path: Path | str) -> np.ndarray:
    """Read an array written by :func:`save_array`."""
    return np.load(path, allow_pickle=False)
