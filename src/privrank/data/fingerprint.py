"""Dataset fingerprints: a SHA-256 that identifies a dataset's content.

A split records the fingerprint of the dataset it was made from, so it can refuse to be used
with another one; anything that must tie a result to exact data (a privacy ledger, a report)
can use it the same way. Metadata (names, curation history) is not part of the fingerprint:
two datasets with the same rows and id maps have the same fingerprint however they were made.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from privrank.data.interactions import Interactions

__all__ = ["fingerprint"]


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
