"""The public hash family ``h_1 … h_k : items → [m]`` that client and server of a sketch share.

An item id (a string: the same on every device and on the server, never a server-side dense
code) is digested once with keyed BLAKE2b (``hashlib``; the key is the collection's public
``hash_seed``), giving a 64-bit value ``b(d)``. Row ``j`` of the family is then
``h_j(d) = splitmix64(b(d) ⊕ (j + 1) · φ) mod m`` with ``φ = 0x9E3779B97F4A7C15``, computed for
whole arrays in numpy. The family is public: it is part of the collection's parameters, not a
secret, and its privacy does not rest on it (the randomiser's guarantee holds for any hash).
The analysis of the estimator treats ``h_j(d)`` as uniform on ``[m]`` and independent across
``(j, d)``, which SplitMix64 over a cryptographic digest approximates well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["hash_table", "item_digests"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def item_digests(item_ids: Sequence[str], hash_seed: int) -> np.ndarray:
    """``b(d)``: the 64-bit keyed BLAKE2b digest of every item id (uint64, one per id)."""
    key = int(hash_seed).to_bytes(16, "little", signed=False)
    out = np.empty(len(item_ids), dtype=np.uint64)
    for i, item in enumerate(item_ids):
        digest = hashlib.blake2b(str(item).encode("utf-8"), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True)
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def hash_table(digests: np.ndarray, k: int, m: int) -> np.ndarray:
    """``T[j, d] = h_j(d)`` for ``j < k`` and every digest: an int32 array of shape (k, n)."""
    rows = (np.arange(1, k + 1, dtype=np.uint64) * _GOLDEN)[:, None]
    with np.errstate(over="ignore"):
        mixed = _splitmix64(digests[None, :] ^ rows)
    return (mixed % np.uint64(m)).astype(np.int32)
