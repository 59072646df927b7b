"""Per-user passes: a shuffle of rows into user buckets and of labels back to their partitions.

The order-dependent steps of the single-process path (the per-user contribution bound, the
holdout and leave-last-out splits) decide each row from *its user's* rows only: the rank of the
row in the user's time-then-position order and keys that hash ``(seed, user code, rank)``
(:mod:`privrank.data._ordering`). So the engine can run the very same single-process function
on disjoint groups of whole users and get the same decision for every row:

1. **scatter** (one task per partition): each selected row goes to bucket ``user mod B`` with
   its user, item, timestamp and *global position* (its row number in the whole input);
2. **bucket** (one task per bucket): a bucket's rows are concatenated in partition order, so
   they are in global-position order, which is the single-process tie-break for equal
   timestamps; the single-process function labels them;
3. **gather** (in the next partition task): each partition reads back the labels of its rows
   from every bucket and places them by position.

No task holds more than one partition or one bucket; the driver holds nothing per row. The
number of buckets is chosen so that a bucket holds about as many rows as a partition.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privrank.distributed.ray_data._parts import Part

__all__ = ["BucketRows", "gather_labels", "load_bucket", "scatter_rows", "write_back"]


@dataclass
class BucketRows:
    """The rows of one bucket, in global-position order.

    Attributes:
        users: User codes (int32).
        items: Item codes (int32).
        timestamps: Timestamps (int64), or ``None`` when the data have none.
        positions: Global row positions (int64, increasing).
        parts: Partition index of each row (int32).
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    positions: np.ndarray
    parts: np.ndarray


def scatter_rows(
    directory: Path,
    part: Part,
    buckets: int,
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray | None,
    selected: np.ndarray | None = None,
) -> int:
    """Write the (selected) rows of one partition into per-bucket files; returns rows sent.

    Files are ``directory/b{bucket}/p{part}.npz``; a bucket with no row of the part gets none.
    """
    assert part.start is not None
    positions = np.arange(part.start, part.start + len(users), dtype=np.int64)
    if selected is not None:
        users, items, positions = users[selected], items[selected], positions[selected]
        timestamps = None if timestamps is None else timestamps[selected]
    bucket_of = users.astype(np.int64) % buckets
    order = np.argsort(bucket_of, kind="stable")  # keeps position order within a bucket
    bounds = np.searchsorted(bucket_of[order], np.arange(buckets + 1))
    for bucket in range(buckets):
        rows = order[bounds[bucket] : bounds[bucket + 1]]
        if len(rows) == 0:
            continue
        arrays = {"users": users[rows], "items": items[rows], "positions": positions[rows]}
        if timestamps is not None:
            arrays["timestamps"] = timestamps[rows]
        _save_npz(directory / f"b{bucket:05d}" / f"p{part.index:05d}.npz", arrays)
    return len(users)


def load_bucket(directory: Path, bucket: int) -> BucketRows:
    """The rows scattered into ``bucket``, in global-position order."""
    files = sorted((directory / f"b{bucket:05d}").glob("p*.npz"))
    users, items, positions, timestamps, parts = [], [], [], [], []
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            users.append(data["users"])
            items.append(data["items"])
            positions.append(data["positions"])
            if "timestamps" in data:
                timestamps.append(data["timestamps"])
            parts.append(np.full(len(data["users"]), int(file.stem[1:]), dtype=np.int32))

    def joined(chunks: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)

    return BucketRows(
        users=joined(users, np.int32),
        items=joined(items, np.int32),
        timestamps=joined(timestamps, np.int64) if timestamps else None,
        positions=joined(positions, np.int64),
        parts=joined(parts, np.int32),
    )


def write_back(directory: Path, bucket: int, rows: BucketRows, labels: np.ndarray) -> None:
    """Send each row's label back to its partition: ``directory/p{part}/b{bucket}.npz``."""
    if len(labels) == 0:
        return
    bounds = np.flatnonzero(np.diff(rows.parts)) + 1
    for chunk in np.split(np.arange(len(labels)), bounds):
        part = int(rows.parts[chunk[0]])
        arrays = {"positions": rows.positions[chunk], "labels": labels[chunk]}
        _save_npz(directory / f"p{part:05d}" / f"b{bucket:05d}.npz", arrays)


def gather_labels(directory: Path, part: Part, default: np.ndarray) -> np.ndarray:
    """The labels of a partition's rows: ``default`` overwritten by what buckets sent back."""
    assert part.start is not None
    labels = default.copy()
    for file in sorted((directory / f"p{part.index:05d}").glob("b*.npz")):
        with np.load(file, allow_pickle=False) as data:
            labels[data["positions"] - part.start] = data["labels"]
    return labels


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(handle)
    try:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
