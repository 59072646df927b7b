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
            values = ids.to_numpy(zero_copy_only=False).astype(np.int64)
            self._order = np.argsort(values, kind="stable")
            self._sorted = values[self._order]
        else:
            self._map = {value: code for code, value in enumerate(ids.to_pylist())}

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
        """Code of one external id (``-1`` when unknown)."""
        return int(self.codes([external])[0])

    def _integer_codes(self, external: Sequence[Any]) -> np.ndarray:
        values = np.zeros(len(external), dtype=np.int64)
        valid = np.zeros(len(external), dtype=bool)
        for position, value in enumerate(external):
            if isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    continue
            integer = isinstance(value, int | np.integer) and not isinstance(value, bool)
            if integer and -(2**63) <= value < 2**63:
                values[position] = value
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
        return self._ids.take(pa.array(codes)).to_pylist()
