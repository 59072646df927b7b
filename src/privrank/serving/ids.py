"""Fast external-id lookups for serving: built once per model version, O(log n) per id.

:meth:`Recommender.user_codes` hashes the whole vocabulary on every call, which is right for
batch work but costs milliseconds per request on a large catalogue. An :class:`IdLookup` is built
when a version is loaded: integer vocabularies keep a sorted copy (binary search, compact), other
vocabularies a dictionary.

JSON ids arrive as ints or strings; a model trained on integer ids knows ``42`` also as ``"42"``,
and one trained on string ids knows ``"42"`` also as ``42``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["IdLookup"]


class IdLookup:
    """External id ↔ dense code for one vocabulary.

    Args:
        ids: The vocabulary (external ids indexed by code).
    """

    def __init__(self, ids: pa.Array) -> None:
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        self._ids = ids
        self._integer = pa.types.is_integer(ids.type)
        self._string = pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)
        if self._integer:
            self._values = ids.to_numpy(zero_copy_only=False)
            values = self._values.astype(np.int64)
            self._order = np.argsort(values, kind="stable")
            self._sorted = values[self._order]
        else:
            self._list = ids.to_pylist()
            self._map = {value: code for code, value in enumerate(self._list)}

    def __len__(self) -> int:
        return len(self._ids)

    def codes(self, external: Sequence[Any]) -> np.ndarray:
        """Codes of ``external`` ids (int64), ``-1`` for ids not in the vocabulary."""
        if len(external) == 0:
            return np.zeros(0, dtype=np.int64)
        if self._integer:
            return self._integer_codes(external)
        if self._string:
            return np.fromiter(
                (self._map.get(str(v), -1) for v in external), np.int64, len(external)
            )
        return np.fromiter((self._map.get(v, -1) for v in external), np.int64, len(external))

    def code(self, external: Any) -> int:
        """Code of one external id (``-1`` when unknown): the per-request path, without the
        arrays :meth:`codes` builds."""
        if not self._integer:
            return self._map.get(str(external) if self._string else external, -1)
        value = _as_int64(external)
        if value is None or self._sorted.size == 0:
            return -1
        position = min(int(np.searchsorted(self._sorted, value)), self._sorted.size - 1)
        return int(self._order[position]) if self._sorted[position] == value else -1

    def _integer_codes(self, external: Sequence[Any]) -> np.ndarray:
        values = np.zeros(len(external), dtype=np.int64)
        valid = np.zeros(len(external), dtype=bool)
        for position, value in enumerate(external):
            integer = _as_int64(value)
            if integer is not None:
                values[position] = integer
                valid[position] = True
        codes = np.full(len(external), -1, dtype=np.int64)
        if self._sorted.size == 0:
            return codes
        positions = np.searchsorted(self._sorted, values)
        positions = np.minimum(positions, self._sorted.size - 1)
        found = valid & (self._sorted[positions] == values)
        codes[found] = self._order[positions[found]]
        return codes

    def decode(self, codes: Sequence[int] | np.ndarray) -> list[Any]:
        """External ids of ``codes`` (all valid)."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.size == 0:
            return []
        if self._integer:
            return self._values[codes].tolist()
        return [self._list[code] for code in codes.tolist()]


def _as_int64(value: Any) -> int | None:
    """``value`` as an int64 id (an int, or a string that parses as one), else ``None``."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return None
    integer = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if integer and -(2**63) <= value < 2**63:
        return int(value)
    return None
