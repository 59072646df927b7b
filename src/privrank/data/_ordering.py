"""Per-user row ranks and seeded, counter-based random keys (shared by curation and splits).

Random choices of the data layer (which rows a capped user keeps, which rows a holdout puts in
test, which users are held out) are made with *keys*: a 64-bit pseudo-random number per row that
is a pure function of ``(seed, purpose, user code, rank of the row within its user)``. Selecting
"the rows with the smallest keys" within each user is then a uniform random subset without
replacement, and it depends neither on the global row order nor on any other user's rows: adding,
removing or shuffling other users' rows never changes a user's choice, as long as the user keeps
its code (compacting a dataset after users were removed renumbers codes, and so redraws).

The mixing function is the SplitMix64 finaliser (Steele, Lea and Flood, 2014), a bijection on
64-bit integers with good avalanche; keys are computed with wrapping uint64 arithmetic:

    s = mix(seed XOR (purpose * GOLDEN))
    h = mix(s + (user + 1) * GOLDEN)
    key = mix(h + (rank + 1) * C2)

all modulo 2**64, with ``GOLDEN = 0x9E3779B97F4A7C15`` and ``C2 = 0xD1B54A32D192ED03``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PURPOSE_CAP",
    "PURPOSE_HOLDOUT",
    "PURPOSE_STRONG_ROWS",
    "PURPOSE_STRONG_USERS",
    "PURPOSE_TWO_STAGE_CARVE",
    "group_starts",
    "random_keys",
    "rank_within_user",
    "splitmix64",
]

GOLDEN = 0x9E3779B97F4A7C15
C2 = 0xD1B54A32D192ED03
_MASK = (1 << 64) - 1

# One purpose per random choice, so the same seed gives independent draws for each.
PURPOSE_CAP = 1
PURPOSE_HOLDOUT = 2
PURPOSE_STRONG_USERS = 3
PURPOSE_STRONG_ROWS = 4
PURPOSE_TWO_STAGE_CARVE = 5


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser applied elementwise (wrapping uint64 arithmetic).

    Args:
        x: Integers, converted to uint64.

    Returns:
        A new uint64 array of the same shape.
    """
    z = np.array(x, dtype=np.uint64, copy=True, ndmin=1)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def random_keys(seed: int, purpose: int, users: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """A uint64 key per row, a pure function of ``(seed, purpose, user, rank)``.

    Args:
        seed: Non-negative integer below ``2**64``.
        purpose: One of the ``PURPOSE_*`` constants.
        users: User code per row.
        ranks: Rank of the row within its user (0-based, in a fixed per-user order).

    Returns:
        uint64 keys, one per row.
    """
    base = splitmix64(np.array([(seed ^ (purpose * GOLDEN)) & _MASK], dtype=np.uint64))[0]
    h = users.astype(np.uint64) + np.uint64(1)
    h *= np.uint64(GOLDEN)
    h += base
    h = splitmix64(h)
    r = ranks.astype(np.uint64) + np.uint64(1)
    r *= np.uint64(C2)
    h += r
    return splitmix64(h)


def group_starts(counts: np.ndarray) -> np.ndarray:
    """Start offset of each user's block when rows are sorted by user (int64)."""
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def rank_within_user(users_sorted: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rank of each row within its user's block, for rows already grouped by user.

    Args:
        users_sorted: User code per row, rows grouped by user in ascending code order.
        counts: Rows per user code (``np.bincount`` of the users).

    Returns:
        int64 ranks ``0 .. count - 1`` within each block, in block order.
    """
    return np.arange(len(users_sorted), dtype=np.int64) - group_starts(counts)[users_sorted]
