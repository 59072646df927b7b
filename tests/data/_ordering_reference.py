"""A plain-Python oracle of privrank.data._ordering's seeded keys (SplitMix64), for the tests."""

from __future__ import annotations

from privrank.data._ordering import GOLDEN

MASK = (1 << 64) - 1
C2 = 0xD1B54A32D192ED03


def ref_mix(z: int) -> int:
    """SplitMix64 finaliser in plain Python integers."""
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def ref_key(seed: int, purpose: int, user: int, rank: int) -> int:
    """The documented key formula of privrank.data._ordering, in plain Python."""
    s = ref_mix((seed ^ (purpose * GOLDEN)) & MASK)
    h = ref_mix((s + (user + 1) * GOLDEN) & MASK)
    return ref_mix((h + (rank + 1) * C2) & MASK)
