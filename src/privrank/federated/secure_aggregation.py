"""Secure aggregation of a round: SecAgg+ over the cohort, optionally with distributed DP.

:class:`SecAggAggregator` has :class:`~privrank.federated.aggregation.SumAggregator`'s
``add``/``finish`` interface, so a round runs unchanged; what the server learns changes:

1. **On each device** (``add``, run for a batch of devices at once): the update is checked
   (shape, finite, L2 norm within the round's bound), then encoded into the ring Z_{2^b}:

   - plain secure aggregation: fixed-point rounding at the round's scale
     (:class:`~privrank.privacy.crypto.secagg.FixedPointRing`); a coordinate outside
     ``[−value_range, value_range]`` is refused and counted (``out_of_range``), never clipped;
   - distributed DP: clipped (by the device), conditionally rounded and discrete Gaussian noise
     added (:meth:`~privrank.privacy.distributed_dp.DistributedDiscreteGaussian.encode_batch`).

   In a deployment the device makes these checks on itself: the server cannot check a masked
   update, and the ring's range bounds what a faulty device can move the sum by.
2. **The protocol** (``finish``): SecAgg+ (:func:`~privrank.privacy.crypto.secagg.run_round`,
   real X25519 keys, Shamir shares and AES-CTR masks) over the encoded devices; a fraction
   ``dropout`` of them, drawn from the round's seed, vanish after sharing their keys (the case
   that needs their masks recovered from shares). The server unmasks only the modular sum of
   the survivors and decodes it. A round with fewer survivors than ``min_survivors`` (or too
   few shares) aborts: :class:`~privrank.privacy.crypto.secagg.SecAggAbort`, nothing released.

**A refused device still takes part in a private round.** In a round with an L2 bound (a
private round: central DP-FedAvg or distributed DP) a device whose update fails a check sends the
zero update instead (counted under its refusal's reason; under distributed DP with its own noise
share): it never moves the sum, and the number of devices in the protocol, hence whether the round
aborts, does not depend on what any device holds (:mod:`privrank.federated.rounds`). Such a
device counts among the round's ``accepted`` (surviving) inputs. A non-private round (no bound)
leaves a refused device out.

The decoded sum equals the sum of the survivors' *quantised* updates exactly (the masks cancel
in the ring); against the float sum it differs by the rounding, at most ``1/(2·scale)`` per
coordinate per device with deterministic rounding.

**Masks elided (simulator only, ``SecureAggregation(masks=False)``).** Since the unmasked
sum *is* the modular sum of the survivors' encoded inputs, a simulator that measures a model
(not the protocol's cost) may compute that sum directly: the same checks, encodings, dropouts
(the same draws) and survivors, no keys, shares or masks, and no encoded cohort held in memory
(a cohort of 10,000 devices of 68,096 coordinates would need 5.4 GB). Under distributed DP the
devices' noise shares are then drawn at once as their sum
(:meth:`~privrank.privacy.distributed_dp.DistributedDiscreteGaussian.sum_noise`, the exact
distribution of a sum of n discrete Gaussians): the server's view has the same distribution.
What is not simulated: SecAgg+'s abort when some dropped device's secret has fewer than t
surviving share holders (with no dropouts it never happens). The privacy accounting does not
change: it is the mechanism's, whatever computes the sum.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from privrank.data._config import FrozenConfig
from privrank.errors import ConfigError
from privrank.federated.aggregation import RoundSum, SumAggregator
from privrank.privacy.updates import ClientUpdates

if TYPE_CHECKING:
    from privrank.privacy.crypto.secagg import FixedPointRing, SimulatedRound
    from privrank.privacy.distributed_dp import DistributedDiscreteGaussian

__all__ = ["SecAggAggregator", "SecureAggregation"]

log = logging.getLogger(__name__)

#: Rows encoded at once (bounds the float copy of a batch).
_CHUNK = 256


class SecureAggregation(FrozenConfig):
    """How a round is aggregated securely (``--aggregation secagg``).

    Attributes:
        modulus_bits: b of the ring Z_{2^b} the updates and masks live in.
        value_range: Plain secure aggregation without an L2 bound (a non-private round): every
            coordinate must lie in ``[−value_range, value_range]`` (refused and counted
            otherwise). A round with an L2 bound C uses ``[−C, C]``.
        scale: Plain secure aggregation: fixed-point units per unit of the update; ``None``:
            the largest power of two for which the cohort's sum cannot wrap around.
        dropout: Fraction of each round's encoding devices that drop out after sharing their
            keys (simulated; their masks are recovered).
        degree_factor: SecAgg+'s graph degree k ≈ ``degree_factor · ln n``.
        threshold_fraction: t = ⌊fraction · (k + 1)⌋ + 1 shares recover a secret.
        masks: ``False``: simulate the released sum without running the protocol (module doc:
            the same sum, the same survivors; for measuring models at cohorts whose real
            protocol would not fit the machine). Never a deployment setting: the Flower path
            always runs SecAgg+.
    """

    modulus_bits: int = Field(48, ge=16, le=62)
    value_range: float = Field(4.0, gt=0, allow_inf_nan=False)
    scale: float | None = Field(None, gt=0, allow_inf_nan=False)
    dropout: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    degree_factor: float = Field(6.0, gt=0, allow_inf_nan=False)
    threshold_fraction: float = Field(1 / 3, gt=0, lt=1, allow_inf_nan=False)
    masks: bool = True

    def ring(self, max_clients: int, value_range: float | None = None) -> FixedPointRing:
        """The fixed-point ring of plain secure aggregation for sums of ``max_clients``
        (coordinates in ``±value_range``, default :attr:`value_range`)."""
        from privrank.privacy.crypto.secagg import FixedPointRing

        limit = self.value_range if value_range is None else float(value_range)
        scale = self.scale
        if scale is None:
            room = (2.0 ** (self.modulus_bits - 1) - 1) / (max(1, max_clients) * limit)
            if room < 2.0:
                raise ConfigError(
                    f"secure aggregation: {max_clients} updates in ±{limit:g} do not "
                    f"fit in Z_2^{self.modulus_bits}; use more modulus bits"
                )
            scale = 2.0 ** math.floor(math.log2(room) - 1.0)
        ring = FixedPointRing(self.modulus_bits, limit, float(scale))
        ring.check_capacity(max(1, max_clients))
        return ring


class SecAggAggregator:
    """Checks, encodes and securely sums a round's updates (SecAgg+, optionally distributed DP).

    Args:
        dim: The dimension every update must have.
        bound: The L2 bound the round declared (``None``: none; required with ``mechanism``).
        settings: The protocol's settings.
        max_clients: The most devices the round can encode (sizes the ring).
        round_index: The round, bound into every key and share (``round_id``) and named in logs.
        seed: Seed of the round's graph, dropouts and (plain) rounding.
        min_survivors: Fewer surviving inputs abort the round (clients refuse to unmask).
        mechanism: The distributed discrete Gaussian each device noises its update with, or
            ``None`` (plain secure aggregation).
        noise_rng: The devices' noise (and rounding) generator under distributed DP.
        bit_mechanism: Adaptive clipping under distributed DP: the distributed discrete
            Gaussian (dimension 1, L2 bound 1) of the clipping bit. Each device appends one
            coordinate to its input, its bit :math:`b_u = 1[\\lVert\\Delta_u\\rVert \\le C_t]`
            on this mechanism's grid with this mechanism's noise share; the server unmasks
            only the noisy sum of the bits (:attr:`RoundSum.noisy_unclipped`). ``None``: no
            bit coordinate.

    **The round's bound and the mechanism's.** ``mechanism`` is calibrated for L2 bound
    :math:`C_0` (its ``l2_clip``); a round whose bound is :math:`C_t` (adaptive clipping)
    scales every clipped update by :math:`C_0/C_t` before encoding it (norm ≤ :math:`C_0`, the
    same grid, noise and wrap-around bound) and the decoded sum by :math:`C_t/C_0`: the noise
    on the sum in update units is proportional to :math:`C_t`, as in Andrew et al. 2021.
    """

    def __init__(
        self,
        dim: int,
        bound: float | None,
        settings: SecureAggregation,
        *,
        max_clients: int,
        round_index: int = 0,
        seed: int = 0,
        min_survivors: int = 1,
        mechanism: DistributedDiscreteGaussian | None = None,
        noise_rng: np.random.Generator | None = None,
        bit_mechanism: DistributedDiscreteGaussian | None = None,
    ) -> None:
        if bit_mechanism is not None and mechanism is None:
            raise ConfigError("the clipping bit's mechanism needs distributed DP's mechanism")
        if bit_mechanism is not None and bit_mechanism.config.dimension != 1:
            raise ConfigError("the clipping bit's mechanism must have dimension 1")
        if mechanism is not None and (bound is None or noise_rng is None):
            raise ConfigError("distributed DP needs the round's clipping bound and a noise source")
        if mechanism is not None and mechanism.config.dimension != dim:
            raise ConfigError(
                f"the distributed-DP mechanism is for dimension {mechanism.config.dimension}, "
                f"the round's updates have {dim}"
            )
        self.dim = int(dim)
        self.bound = bound
        self.settings = settings
        self.round_index = int(round_index)
        self.min_survivors = int(min_survivors)
        self.mechanism = mechanism
        self.noise_rng = noise_rng
        self.bit_mechanism = bit_mechanism
        #: C_t / C_0: an update is encoded divided by it and the sum decoded times it.
        self.unit = (
            1.0 if mechanism is None or bound is None else float(bound) / mechanism.config.l2_clip
        )
        #: The protocol's input length: the update, then (adaptive clipping) the bit.
        self.width = self.dim + (0 if bit_mechanism is None else 1)
        self._rng = np.random.default_rng([seed, round_index, 7])
        # A round with an L2 bound bounds every coordinate by it: the ring's range is the bound.
        self.ring = None if mechanism is not None else settings.ring(max_clients, bound)
        self._checker = SumAggregator(dim, bound, round_index)
        #: A private round (with a bound): refused devices send the zero update (module doc).
        self.zero_refused = bound is not None
        self._encoded: list[np.ndarray] = []
        self._unclipped: list[np.ndarray] = []
        self._refused: dict[str, int] = {}
        #: The protocol's run (released sum, survivors, cost) once :meth:`finish` ran.
        self.last_round: SimulatedRound | None = None
        #: Masks elided: the running sum of the surviving inputs, and the input count so far.
        self._sum = np.zeros(self.width, dtype=np.int64 if mechanism is not None else np.uint64)
        self._inputs = 0
        self._survivors = 0
        self._dropped = 0
        self._unclipped_survivors = 0

    def add(self, updates: ClientUpdates, unclipped: np.ndarray | None = None) -> np.ndarray:
        """Check and encode a batch of devices' updates (each device's own step).

        Returns:
            ``(len,)`` bool, the updates encoded for the protocol.
        """
        ok, counts = self._checker.accepted_mask(updates)
        for reason, count in counts.items():
            self._refused[reason] = self._refused.get(reason, 0) + count
        bits = (
            np.ones(len(updates), dtype=bool)
            if unclipped is None
            else np.asarray(unclipped, dtype=bool)
        )
        for start in range(0, len(updates), _CHUNK):
            stop = min(start + _CHUNK, len(updates))
            chosen = np.flatnonzero(ok[start:stop])
            if chosen.size:
                rows = start + chosen
                encoded, refused = self._encode(
                    np.asarray(updates.dense(start, stop))[chosen], bits[rows]
                )
                if len(refused):
                    ok[rows[refused]] = False
                    out = self._refused.get("out_of_range", 0)
                    self._refused["out_of_range"] = out + len(refused)
                self._keep(encoded, np.delete(bits[rows], refused))
            if self.zero_refused:
                self._add_zero_updates(int((~ok[start:stop]).sum()))
        return ok

    def _add_zero_updates(self, count: int) -> None:
        """``count`` refused devices of a private round send the zero update (whose norm is
        within any bound: their clipping bit is set)."""
        if count == 0:
            return
        encoded, refused = self._encode(np.zeros((count, self.dim)), np.ones(count, dtype=bool))
        if len(refused):  # the zero vector is inside every ring's range
            raise AssertionError("the zero update was refused by the ring")
        self._keep(encoded, np.ones(count, dtype=bool))

    def _keep(self, encoded: np.ndarray, unclipped: np.ndarray) -> None:
        """Hold encoded inputs for the protocol, or (masks elided) draw which of them drop out
        (the draws :meth:`finish` makes, in the same order) and add the survivors to the sum."""
        if self.settings.masks:
            self._encoded.append(encoded)
            self._unclipped.append(unclipped)
            return
        dropped = self._rng.random(len(encoded)) < self.settings.dropout
        self._inputs += len(encoded)
        self._dropped += int(dropped.sum())
        self._survivors += int((~dropped).sum())
        self._unclipped_survivors += int(unclipped[~dropped].sum())
        # uint64 wraps mod 2^64, a multiple of the ring's modulus; int64 grid sums do not wrap
        self._sum += encoded[~dropped].sum(axis=0, dtype=self._sum.dtype)

    def _encode(self, dense: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.mechanism is not None:
            assert self.noise_rng is not None and self.bound is not None
            # The device clipped with its update's factored norm; the check above refused any
            # update more than 1e-5 (relative) over the bound. Clipping the explicit vector
            # again removes that float slack, which the mechanism's exact check would refuse;
            # then it is brought to the mechanism's bound C_0 (divided by C_t / C_0).
            from privrank.privacy.distributed_dp import clip_l2

            exact, _ = clip_l2(dense, self.bound)
            if self.unit != 1.0:
                exact, _ = clip_l2(exact / self.unit, self.mechanism.config.l2_clip)
            if not self.settings.masks:  # the noise is drawn as the survivors' sum in finish
                encoded, refused = self.mechanism.round_batch(exact, self.noise_rng)
            else:
                encoded, refused = self.mechanism.encode_batch(exact, self.noise_rng)
            if self.bit_mechanism is None:
                return encoded, refused
            column = np.delete(np.asarray(bits, dtype=np.float64), refused)[:, None]
            if not self.settings.masks:
                bit, _ = self.bit_mechanism.round_batch(column, self.noise_rng)
            else:
                bit, _ = self.bit_mechanism.encode_batch(column, self.noise_rng)
            return np.concatenate([encoded, bit.astype(encoded.dtype)], axis=1), refused
        from privrank.privacy.crypto.secagg import encode_batch

        assert self.ring is not None
        return encode_batch(self.ring, dense)

    def finish(self) -> RoundSum:
        """Run SecAgg+ over the encoded devices and decode the unmasked sum.

        Raises:
            SecAggAbort: Fewer than ``min_survivors`` inputs, or too few shares.
        """
        from privrank.privacy.crypto.secagg import SecAggConfig, run_round

        refused = {k: v for k, v in self._refused.items() if v}
        if not self.settings.masks:
            return self._finish_without_masks(refused)
        encoded = (
            np.concatenate(self._encoded)
            if self._encoded
            else np.zeros((0, self.width), dtype=np.uint64)
        )
        unclipped = np.concatenate(self._unclipped) if self._unclipped else np.zeros(0, bool)
        n = encoded.shape[0]
        if n < max(self.min_survivors, 2):
            return RoundSum(np.zeros(self.dim), 0, 0, {**refused, "too_few_clients": n})
        dropped = self._rng.random(n) < self.settings.dropout
        config = SecAggConfig(
            modulus_bits=self.settings.modulus_bits
            if self.mechanism is None
            else self.mechanism.config.modulus_bits,
            degree_factor=self.settings.degree_factor,
            threshold_fraction=self.settings.threshold_fraction,
            min_survivors=self.min_survivors,
            round_id=self.round_index,
        )
        self.last_round = run_round(
            encoded,
            config,
            drop_after_sharing=np.flatnonzero(dropped).tolist(),
            graph_seed=int(self._rng.integers(2**62)),
        )
        result = self.last_round.result
        total, noisy_bits = self._decode(np.asarray(result.total))
        survivors = np.asarray(sorted(result.survivors), dtype=np.int64)
        if dropped.any():
            refused["dropped"] = int(dropped.sum())
        log.info(
            "round %d: SecAgg+ unmasked the sum of %d devices (%d dropped, recovered)",
            self.round_index,
            len(survivors),
            int(dropped.sum()),
        )
        return RoundSum(
            np.asarray(total, dtype=np.float64),
            accepted=len(survivors),
            unclipped=int(unclipped[survivors].sum()) if len(survivors) else 0,
            refused=refused,
            noisy_unclipped=noisy_bits,
        )

    def _finish_without_masks(self, refused: dict[str, int]) -> RoundSum:
        """:meth:`finish` with the masks elided: the modular sum SecAgg+ would unmask."""
        from privrank.privacy.crypto.secagg import SecAggAbort

        n = self._inputs
        if n < max(self.min_survivors, 2):
            return RoundSum(np.zeros(self.dim), 0, 0, {**refused, "too_few_clients": n})
        if self._survivors < self.min_survivors:  # SecAgg+'s server refuses to unmask
            raise SecAggAbort(
                f"only {self._survivors} masked inputs arrived, fewer than min_survivors="
                f"{self.min_survivors}; the round releases nothing"
            )
        noisy_bits = None
        if self.mechanism is not None:
            assert self.noise_rng is not None
            noise = [self.mechanism.sum_noise(self._survivors, self.dim, self.noise_rng)]
            if self.bit_mechanism is not None:
                noise.append(self.bit_mechanism.sum_noise(self._survivors, 1, self.noise_rng))
            noisy = self._sum + np.concatenate(noise)
            mask = np.uint64((1 << self.mechanism.config.modulus_bits) - 1)
            total, noisy_bits = self._decode(noisy.view(np.uint64) & mask)
        else:
            mask = np.uint64((1 << self.settings.modulus_bits) - 1)
            total = self._decode_plain(self._sum & mask)
        if self._dropped:
            refused["dropped"] = self._dropped
        return RoundSum(
            np.asarray(total, dtype=np.float64),
            accepted=self._survivors,
            unclipped=self._unclipped_survivors,
            refused=refused,
            noisy_unclipped=noisy_bits,
        )

    def _decode(self, total: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The unmasked ring sum to the update sum (times :attr:`unit`) and, with the bit
        coordinate, the noisy count of unclipped devices."""
        if self.mechanism is None:
            return self._decode_plain(total), None
        updates = self.mechanism.decode(total[: self.dim]) * self.unit
        if self.bit_mechanism is None:
            return updates, None
        return updates, float(self.bit_mechanism.decode(total[self.dim :])[0])

    def _decode_plain(self, total: np.ndarray) -> np.ndarray:
        assert self.ring is not None
        return self.ring.decode(total)
