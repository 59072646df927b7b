"""Dataset fingerprints: a SHA-256 that identifies a dataset's content.

A split records the fingerprint of the dataset it was made from, so it can refuse to be used
with another one; anything that must tie a result to exact data (a privacy ledger, a report)
can use it the same way. Metadata (names, curation history) is not part of the fingerprint:
two datasets with the same rows and id maps have the same fingerprint however they were made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from privrank.data.interactions import Interactions

__all__ = ["fingerprint", "fingerprint_stream"]

_DTYPES = {"user": "<i4", "item": "<i4", "timestamp": "<i8", "value": "<f4"}


def fingerprint(data: Interactions) -> str:
    """SHA-256 over a dataset's columns and id maps (not its metadata), as hex.

    Datasets with the same columns, values, row order and external ids (of the same types)
    have the same fingerprint; changing any of these changes it (barring SHA-256 collisions).
    """
    digest = hashlib.sha256(b"privrank-interactions-v1\0")
    for name in data.table.column_names:
        column = {
            "user": data.users,
            "item": data.items,
            "timestamp": data.timestamps,
            "value": data.values,
        }[name]()
        if column is None:  # the table has the column, so the accessor returns it
            raise RuntimeError(f"the interactions' {name} column reads as None")
        _hash_numpy(digest, name, column)
    _hash_arrow(digest, "user_ids", data.user_ids)
    _hash_arrow(digest, "item_ids", data.item_ids)
    return digest.hexdigest()


def fingerprint_stream(
    column_names: Sequence[str],
    rows: int,
    read_column: Callable[[str], Iterable[np.ndarray]],
    user_ids: pa.Array,
    item_ids: pa.Array,
) -> str:
    """:func:`fingerprint` of a dataset read column by column in chunks, never whole.

    The digest is the same byte stream as :func:`fingerprint`'s: for each column, a header
    with its dtype and length, then its values in row order (little-endian); then the id maps.
    So a dataset stored as many Parquet parts gets the fingerprint its concatenation would.

    Args:
        column_names: The table's columns in order (``user``, ``item``, then ``timestamp``
            and ``value`` when present).
        rows: The total number of rows.
        read_column: Yields one column's values in row order, chunk by chunk.
        user_ids: The user id map.
        item_ids: The item id map.

    Returns:
        The hex SHA-256.

    Raises:
        ValueError: The chunks of a column do not add up to ``rows``.
    """
    digest = hashlib.sha256(b"privrank-interactions-v1\0")
    for name in column_names:
        dtype = np.dtype(_DTYPES[name])
        digest.update(f"{name}:{dtype.str}:{rows}\0".encode())
        seen = 0
        for chunk in read_column(name):
            values = np.ascontiguousarray(chunk, dtype=dtype)
            digest.update(values.data.cast("B"))
            seen += len(values)
        if seen != rows:
            raise ValueError(f"column {name!r} holds {seen} values, expected {rows}")
    _hash_arrow(digest, "user_ids", user_ids)
    _hash_arrow(digest, "item_ids", item_ids)
    return digest.hexdigest()


def _hash_numpy(digest: Any, name: str, values: np.ndarray) -> None:
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    digest.update(f"{name}:{values.dtype.str}:{len(values)}\0".encode())
    digest.update(values.data.cast("B"))


def _hash_arrow(digest: Any, name: str, array: pa.Array) -> None:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        _hash_numpy(digest, f"{name}[{array.type}]", array.to_numpy(zero_copy_only=False))
        return
    text = array.cast(pa.large_binary()) if pa.types.is_binary(array.type) else array
    text = text.cast(pa.large_string()) if not pa.types.is_large_binary(text.type) else text
    offsets_buffer, data_buffer = text.buffers()[1], text.buffers()[2]
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[
        text.offset : text.offset + len(text) + 1
    ]
    _hash_numpy(digest, f"{name}[{array.type}].lengths", np.diff(offsets))
    if len(offsets) and data_buffer is not None:
        digest.update(memoryview(data_buffer)[int(offsets[0]) : int(offsets[-1])])
