"""Turn parsed columns into :class:`~privrank.data.interactions.Interactions`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from privrank.data.interactions import DatasetMetadata, Interactions, encode_ids
from privrank.data.readers.sequences import positions

__all__ = ["build_interactions", "encode_column"]

# Integer ids spanning at most this many values beyond the row count are encoded with a dense
# lookup table (linear time, memory of the table <= 4 bytes per row + 4 MiB).
_DENSE_SLACK = 1 << 20


def build_interactions(
    columns: dict[str, pa.Array | pa.ChunkedArray],
    *,
    positions_as_time: bool,
    metadata: DatasetMetadata,
) -> Interactions:
    """Encode ids and assemble the interaction table, releasing each input column when done.

    Args:
        columns: ``user``, ``item`` and optionally ``timestamp`` and ``value``; consumed.
        positions_as_time: Make timestamps from each row's position in its user's history
            (``sequences`` and ``pairs`` files).
        metadata: Provenance.

    Returns:
        The interactions; integer id vocabularies are int64.
    """
    user_codes, user_ids = encode_column(columns.pop("user"))
    item_codes, item_ids = encode_column(columns.pop("item"))
    table: dict[str, pa.Array | np.ndarray] = {"user": user_codes, "item": item_codes}
    if positions_as_time:
        table["timestamp"] = positions(user_codes, len(user_ids))
    elif "timestamp" in columns:
        table["timestamp"] = _single(columns.pop("timestamp")).cast(pa.int64())
    if "value" in columns:
        table["value"] = _single(columns.pop("value")).cast(pa.float32(), safe=False)
    return Interactions(pa.table(table), user_ids, item_ids, metadata)


def encode_column(ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dense int32 codes in sorted id order, as :func:`~privrank.data.interactions.encode_ids`.

    Integer ids whose range is not much wider than the number of rows (MovieLens, SASRec and
    most exported logs) are encoded chunk by chunk with a lookup table, in linear time and
    without concatenating the chunks; others fall back to ``encode_ids`` (hash-based).

    Returns:
        ``(codes, vocabulary)``; an integer vocabulary is int64.
    """
    if isinstance(ids, pa.Array):
        ids = pa.chunked_array([ids])
    if pa.types.is_integer(ids.type) and len(ids) and not ids.null_count:
        bounds = pc.min_max(ids)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if high - low <= len(ids) + _DENSE_SLACK:
            return _encode_dense(ids, low, high)
    codes, vocabulary = encode_ids(ids)
    if pa.types.is_integer(vocabulary.type):
        vocabulary = vocabulary.cast(pa.int64())
    return codes, vocabulary


def _encode_dense(ids: pa.ChunkedArray, low: int, high: int) -> tuple[np.ndarray, pa.Array]:
    present = np.zeros(high - low + 1, dtype=bool)
    for chunk in ids.chunks:
        present[chunk.to_numpy() - low] = True
    lookup = np.cumsum(present, dtype=np.int32)
    lookup -= 1
    codes = np.empty(len(ids), dtype=np.int32)
    start = 0
    for chunk in ids.chunks:
        values = chunk.to_numpy()
        codes[start : start + len(values)] = lookup[values - low]
        start += len(values)
    vocabulary = np.flatnonzero(present).astype(np.int64) + low
    return codes, pa.array(vocabulary)


def _single(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column
