"""Shamir secret sharing over the prime field GF(p), p = 2^521 − 1 (a Mersenne prime).

A secret ``s`` of at most 32 bytes is read as an integer ``s < 2^256 < p``. Sharing with
threshold ``t`` draws a polynomial ``f(x) = s + a_1 x + … + a_{t−1} x^{t−1}`` with coefficients
uniform in GF(p) (from :mod:`secrets`) and gives holder ``i`` the point ``(x_i, f(x_i))``, where
``x_i ≥ 1`` is the holder's public index. Any ``t`` points determine ``f`` and so ``s = f(0)``
(Lagrange interpolation at 0); any ``t − 1`` points are independent of ``s`` (information-
theoretic secrecy, Shamir 1979). This sharing is part of the protocol (not a cipher), so it is
written here.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PRIME", "SECRET_BYTES", "SHARE_BYTES", "Share", "combine", "split"]

#: The field's modulus: the Mersenne prime 2^521 − 1.
PRIME = 2**521 - 1
#: Largest secret, in bytes (a 32-byte seed or X25519 private key).
SECRET_BYTES = 32
#: Bytes of one share's value on the wire (521 bits).
SHARE_BYTES = 66


@dataclass(frozen=True)
class Share:
    """One holder's point ``(x, f(x))`` of a sharing polynomial.

    Attributes:
        x: The holder's public index (≥ 1; a client's id + 1).
        y: ``f(x)`` in GF(p).
    """

    x: int
    y: int

    def to_bytes(self) -> bytes:
        """``y`` as 66 big-endian bytes (``x`` is known from who holds the share)."""
        return self.y.to_bytes(SHARE_BYTES, "big")


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Share ``secret`` among holders at the indices ``xs`` so that any ``threshold`` recover it.

    Args:
        secret: At most 32 bytes.
        threshold: t, with 1 ≤ t ≤ len(xs).
        xs: Distinct holder indices in [1, p).

    Raises:
        ValueError: Bad secret, threshold or indices.
    """
    if not isinstance(secret, bytes) or len(secret) > SECRET_BYTES:
        raise ValueError(f"a Shamir secret must be at most {SECRET_BYTES} bytes")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError(f"Shamir holder indices must be distinct and in [1, p). Got {xs!r}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"Shamir threshold must be in [1, {len(xs)}]. Got {threshold!r}")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for a in reversed(coefficients):  # Horner
            y = (y * x + a) % PRIME
        shares.append(Share(int(x), y))
    return shares


def combine(shares: Sequence[Share], threshold: int, length: int = SECRET_BYTES) -> bytes:
    """The secret from at least ``threshold`` shares (the first ``threshold`` are used).

    Args:
        shares: Shares with distinct indices.
        threshold: t of the sharing.
        length: Bytes of the secret.

    Raises:
        ValueError: Fewer than ``threshold`` shares, or repeated indices.
    """
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot recover a secret shared with t={threshold}")
    points = list(shares[:threshold])
    if len({s.x for s in points}) != len(points):
        raise ValueError("Shamir shares with repeated indices")
    secret = 0
    for i, si in enumerate(points):
        numerator, denominator = 1, 1
        for j, sj in enumerate(points):
            if i != j:
                numerator = numerator * sj.x % PRIME
                denominator = denominator * (sj.x - si.x) % PRIME
        secret = (secret + si.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * length):
        raise ValueError("the shares do not interpolate to a secret of the expected size")
    return secret.to_bytes(length, "big")
