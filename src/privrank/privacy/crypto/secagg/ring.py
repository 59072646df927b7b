"""Fixed-point encoding of real updates in the ring Z_R, R = 2^b, with an explicit clipping range.

A real coordinate ``x`` with ``|x| ≤ clip`` is encoded as the integer ``q = round(x · scale)``
reduced mod R (two's complement). Sums of encodings are sums of the integers mod R; the sum of
``n`` encodings decodes to the sum of the ``q``'s divided by ``scale`` exactly as long as that
integer sum stays in ``[−R/2, R/2)``, which :meth:`FixedPointRing.check_capacity` guarantees for
``n`` clients (``n · clip · scale < R/2``): no wrap-around is possible, not just unlikely.

**Never silently clipped.** An update with a coordinate outside ``[−clip, clip]`` (or not
finite) is refused with :class:`~privrank.privacy.crypto.secagg.errors.UpdateOutOfRange`,
naming the client, the coordinate, the value and the range; a simulator that prefers to count
refusals catches it and leaves the client out (:func:`encode_batch` does exactly that and
returns who was refused). Bounding the update (e.g. DP-FedAvg's L2 clipping) is the caller's
explicit, counted step.

Rounding is deterministic (round half to even) or, with a generator, unbiased stochastic
rounding (``E[q] = x · scale``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.crypto.secagg.errors import UpdateOutOfRange

__all__ = ["FixedPointRing", "encode_batch"]


@dataclass(frozen=True)
class FixedPointRing:
    """Fixed-point encoding into Z_{2^modulus_bits}.

    Attributes:
        modulus_bits: b, with R = 2^b (8 ≤ b ≤ 62).
        clip: The clipping range: every coordinate must lie in ``[−clip, clip]``.
        scale: Fixed-point scale: one unit of the ring is ``1/scale``.
    """

    modulus_bits: int
    clip: float
    scale: float

    def __post_init__(self) -> None:
        if not (isinstance(self.modulus_bits, int) and 8 <= self.modulus_bits <= 62):
            raise ConfigError(
                f"FixedPointRing.modulus_bits: got {self.modulus_bits!r}; expected an int in "
                "[8, 62]"
            )
        for name in ("clip", "scale"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"FixedPointRing.{name}: got {value!r}; expected a finite number > 0"
                )
        if self.clip * self.scale >= 2 ** (self.modulus_bits - 1):
            raise ConfigError(
                f"FixedPointRing: clip · scale = {self.clip * self.scale:g} does not fit in "
                f"the signed range of Z_2^{self.modulus_bits}"
            )

    @property
    def modulus(self) -> int:
        """R = 2^b."""
        return 1 << self.modulus_bits

    def max_clients(self) -> int:
        """The most clients whose sum can never wrap around: ``n · ⌈clip · scale⌉ < R/2``."""
        return int((2 ** (self.modulus_bits - 1) - 1) // math.ceil(self.clip * self.scale))

    def check_capacity(self, n_clients: int) -> None:
        """Refuse a round of ``n_clients`` whose sum could wrap around the modulus.

        Raises:
            ConfigError: ``n_clients > max_clients()``.
        """
        if n_clients > self.max_clients():
            raise ConfigError(
                f"a sum of {n_clients} updates in [-{self.clip:g}, {self.clip:g}] at scale "
                f"{self.scale:g} can wrap around Z_2^{self.modulus_bits} (at most "
                f"{self.max_clients()} clients fit); use more modulus bits or a smaller scale"
            )

    def quantise(
        self,
        update: np.ndarray,
        *,
        client_id: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """The integers ``round(update · scale)`` (int64), after checking the clipping range.

        Args:
            update: A 1-d float vector.
            client_id: Named in the error.
            rng: For unbiased stochastic rounding; ``None``: round half to even.

        Raises:
            UpdateOutOfRange: A coordinate is outside ``[−clip, clip]`` or not finite.
        """
        x = np.asarray(update, dtype=np.float64)
        if x.ndim != 1:
            raise ConfigError(f"an update must be a 1-d vector. Got shape {x.shape}")
        bad = ~(np.abs(x) <= self.clip)  # NaN compares false: refused too
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            who = "an update" if client_id is None else f"client {client_id}'s update"
            raise UpdateOutOfRange(
                f"{who} has {int(bad.sum())} coordinate(s) outside the clipping range "
                f"[-{self.clip:g}, {self.clip:g}]: coordinate {index} is {float(x[index])!r}; "
                "the update is refused (never silently clipped)",
                client_id=client_id,
                count=int(bad.sum()),
                index=index,
                value=float(x[index]),
            )
        scaled = x * self.scale
        if rng is None:
            return np.rint(scaled).astype(np.int64)
        low = np.floor(scaled)
        return (low + (rng.random(x.shape) < scaled - low)).astype(np.int64)

    def to_ring(self, integers: np.ndarray) -> np.ndarray:
        """Signed integers reduced into Z_R (uint64, two's complement)."""
        return np.asarray(integers, dtype=np.int64).view(np.uint64) & np.uint64(self.modulus - 1)

    def encode(
        self,
        update: np.ndarray,
        *,
        client_id: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """:meth:`quantise` then :meth:`to_ring`."""
        return self.to_ring(self.quantise(update, client_id=client_id, rng=rng))

    def to_signed(self, element: np.ndarray) -> np.ndarray:
        """Ring elements as the signed integers in ``[−R/2, R/2)`` (int64)."""
        e = np.asarray(element, dtype=np.uint64) & np.uint64(self.modulus - 1)
        signed = e.astype(np.int64)
        return np.where(signed >= 2 ** (self.modulus_bits - 1), signed - self.modulus, signed)

    def decode(self, element: np.ndarray) -> np.ndarray:
        """A ring element (e.g. a sum of encodings) back to reals: ``to_signed / scale``."""
        return self.to_signed(element).astype(np.float64) / self.scale


def encode_batch(
    ring: FixedPointRing,
    updates: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch of updates (n × d), counting instead of raising on refused ones.

    Returns:
        ``(encoded, refused)``: the ring elements of the accepted rows (n_accepted × d, uint64)
        and the row indices refused for being outside the clipping range.
    """
    x = np.asarray(updates, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"a batch of updates must be n x d. Got shape {x.shape}")
    refused = np.flatnonzero(~(np.abs(x) <= ring.clip).all(axis=1))
    kept = np.setdiff1d(np.arange(x.shape[0]), refused)
    rows = x[kept]
    scaled = rows * ring.scale
    if rng is None:
        integers = np.rint(scaled).astype(np.int64)
    else:
        low = np.floor(scaled)
        integers = (low + (rng.random(rows.shape) < scaled - low)).astype(np.int64)
    return ring.to_ring(integers), refused
