"""Distributed DP: the distributed discrete Gaussian mechanism (Kairouz, Liu & Steinke 2021).

Each client clips its update, rounds it onto an integer grid, adds discrete Gaussian noise and
only then masks it for secure aggregation
(:mod:`privrank.privacy.crypto.secagg`); the server unmasks only the modular sum, which already
carries the noise of at least ``min_clients`` clients. **No party ever sees an un-noised sum or
an individual update.**

Trust, party by party:

- *Server*: untrusted for individual updates. It sees only SecAgg+'s modular sum, which is
  (ε, δ)-DP on its own; it is assumed honest-but-curious for the protocol (it reports dropouts
  truthfully, as SecAgg+'s semi-honest model requires).
- *Each client*: trusted to clip and to add its own noise. The accounting needs at least
  ``min_clients`` honest noisy inputs in every released sum; SecAgg+ clients refuse to unmask a
  round with fewer survivors.
- *Analyst / anyone downstream*: sees only post-processing of the sums.

Guarantee: over ``rounds`` rounds, the sequence of released sums is (ε, δ)-DP with respect to
**one user's update** (the user's contribution to each round replaced by zero, the user still
taking part): see :mod:`privrank.privacy.distributed_dp_accounting` for the theorem, what is
accounted for dropouts (the smallest number of surviving clients) and for the modular
wrap-around (post-processing; its probability is bounded and refused above a threshold).

Use:

- the federated *client* calls :meth:`DistributedDiscreteGaussian.encode` (clip check, rounding,
  noise, ring) and hands the result to :meth:`SecAggClient.masked_input
  <privrank.privacy.crypto.secagg.SecAggClient.masked_input>`; a simulator calls
  :meth:`~DistributedDiscreteGaussian.encode_batch` for all clients at once;
- the *server* decodes the unmasked sum with :meth:`~DistributedDiscreteGaussian.decode`;
- the *training loop* spends each round from the ledger through :class:`RoundSpender`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from privrank.config_errors import config_error
from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.privacy.crypto.secagg.errors import UpdateOutOfRange
from privrank.privacy.discrete_gaussian import (
    discrete_gaussian_variance,
    sample_discrete_gaussian,
    sample_discrete_gaussian_sum,
)
from privrank.privacy.distributed_dp_accounting import (
    ddg_epsilon,
    ddg_round_rho,
    rounded_l2_bound,
    wrap_probability,
)
from privrank.privacy.mechanism import Mechanism, current_noise_scale, register_mechanism
from privrank.privacy.spec import AccountantKind

if TYPE_CHECKING:
    from privrank.privacy.calibration import Release
    from privrank.privacy.ledger import Ledger, Reservation

__all__ = [
    "DistributedDPConfig",
    "DistributedDiscreteGaussian",
    "RoundSpender",
    "clip_l2",
]

_MAX_ROUNDING_TRIES = 200


class DistributedDPConfig(BaseModel):
    """Settings of the distributed discrete Gaussian.

    Attributes:
        epsilon: Target ε over all ``rounds``.
        delta: Target δ.
        l2_clip: c: every client's update must have L2 norm ≤ c (refused otherwise).
        dimension: d, the update's length.
        rounds: T, the rounds the budget covers.
        min_clients: n: the fewest clients in any released sum (SecAgg+'s ``min_survivors``).
        max_clients: The most clients in a sum (for the wrap-around bound).
        modulus_bits: b of the ring Z_{2^b} of secure aggregation.
        scale: Grid units per unit of the update (1/γ); ``None``: the largest power of two
            for which the wrap-around bound holds.
        beta: β of conditional randomised rounding (0: plain rounding, worst-case Δ₂).
        max_wrap_probability: The largest accepted bound on the chance that a round's sum
            wraps around the modulus.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(gt=0, lt=1, allow_inf_nan=False)
    l2_clip: float = Field(gt=0, allow_inf_nan=False)
    dimension: int = Field(ge=1)
    rounds: int = Field(1, ge=1)
    min_clients: int = Field(ge=1)
    max_clients: int = Field(ge=1)
    modulus_bits: int = Field(32, ge=8, le=62)
    scale: float | None = Field(None, gt=0, allow_inf_nan=False)
    beta: float = Field(math.exp(-0.5), ge=0, lt=1, allow_inf_nan=False)
    max_wrap_probability: float = Field(1e-6, gt=0, lt=1, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, "DistributedDPConfig", model=type(self)) from None

    @model_validator(mode="after")
    def _clients(self) -> DistributedDPConfig:
        if self.max_clients < self.min_clients:
            raise ValueError(
                f"max_clients ({self.max_clients}) must be ≥ min_clients ({self.min_clients})"
            )
        return self


def clip_l2(updates: np.ndarray, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """DP-FedAvg's explicit clipping step: rows scaled to L2 norm ≤ ``bound``, and which were.

    Returns:
        ``(clipped, was_clipped)``: the rows, and a boolean per row (to be counted).
    """
    x = np.asarray(updates, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    factor = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    return x * factor, (norms[..., 0] > bound)


@register_mechanism("distributed-discrete-gaussian")
class DistributedDiscreteGaussian(Mechanism[np.ndarray, np.random.Generator]):
    """The distributed discrete Gaussian mechanism, calibrated to (ε, δ) over T rounds.

    Each client releases ``x̃ + N_Z(0, σ²)^d`` into secure aggregation, where ``x̃`` is its update
    (L2 norm ≤ c) scaled by ``s`` and conditionally rounded to an integer vector of L2 norm
    ≤ Δ₂; the server learns ``Σ_i (x̃_i + noise_i) mod 2^b`` over at least ``n = min_clients``
    clients. σ is the smallest (within 0.1 %) for which T rounds of the
    :func:`~privrank.privacy.distributed_dp_accounting.ddg_round_rho`-zCDP sum meet (ε, δ) by
    the RDP accountant. The guarantee, the neighbouring relation, the dropout and wrap-around
    accounting and the trust in each party are stated in :mod:`privrank.privacy.distributed_dp`
    and :mod:`privrank.privacy.distributed_dp_accounting`.

    Mechanism attributes are in grid units: ``sensitivity`` is Δ₂, ``noise_multiplier`` is
    ``√n σ / Δ₂`` (so ``noise_std`` is the σ of the n-client noise sum).

    Args:
        config: The settings.

    Raises:
        ConfigError: No scale meets the wrap-around bound, or the target cannot be met.
    """

    def __init__(self, config: DistributedDPConfig) -> None:
        if not isinstance(config, DistributedDPConfig):
            raise ConfigError(
                "DistributedDiscreteGaussian needs a DistributedDPConfig. Got "
                f"{type(config).__name__}"
            )
        self.config = config
        self.noise_scale = current_noise_scale()
        scales = (
            [config.scale]
            if config.scale is not None
            else [2.0**j for j in range(config.modulus_bits, -31, -1)]
        )
        for scale in scales:
            self.scale = float(scale)
            self.sensitivity = rounded_l2_bound(
                config.l2_clip * self.scale, config.dimension, config.beta
            )
            if config.max_clients * self.sensitivity >= 2.0 ** (config.modulus_bits - 1):
                continue
            self.noise_multiplier = self.calibrate(config.epsilon, config.delta, "rdp")
            if self.wrap_probability() <= config.max_wrap_probability:
                return
        tried = "" if config.scale is None else f" {config.scale:g}"
        raise ConfigError(
            f"DistributedDiscreteGaussian: no grid scale{tried} "
            f"keeps a sum of {config.max_clients} clients inside Z_2^{config.modulus_bits} with "
            f"wrap-around probability ≤ {config.max_wrap_probability:g}; use more modulus bits"
        )

    # -- the Mechanism interface ----------------------------------------------------------------
    @property
    def sigma(self) -> float:
        """σ of each client's discrete Gaussian, in grid units (calibrated)."""
        return self.noise_multiplier * self.sensitivity / math.sqrt(self.config.min_clients)

    def round_rho(self) -> float:
        """ρ of one round with ``min_clients`` clients."""
        c = self.config
        return ddg_round_rho(self.sigma, c.min_clients, self.sensitivity, c.dimension)

    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """The smallest multiplier ``√n σ / Δ₂`` (within 0.1 %) meeting (ε, δ) over T rounds.

        Raises:
            ConfigError: ``accountant`` is not ``rdp`` (the bound proven is a zCDP bound; a
                PLD of the Gaussian would claim more than is proven).
        """
        if accountant != "rdp":
            raise ConfigError(
                "the distributed discrete Gaussian is accounted by its zCDP bound, with the "
                f"RDP accountant only. Got accountant {accountant!r}"
            )
        c = self.config
        root_n = math.sqrt(c.min_clients)

        def epsilon_of(multiplier: float) -> float:
            sigma = multiplier * self.sensitivity / root_n
            rho = ddg_round_rho(sigma, c.min_clients, self.sensitivity, c.dimension)
            return ddg_epsilon(rho, c.rounds, delta)

        from privrank.privacy.accounting import calibrate_noise  # the server's side only

        return calibrate_noise(epsilon_of, epsilon)

    def add_noise(self, statistic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One client's share of the noise: ``statistic + N_Z(0, σ²)`` per coordinate (int64)."""
        noise = sample_discrete_gaussian(self.sigma * self.noise_scale, np.shape(statistic), rng)
        noisy: np.ndarray = np.asarray(statistic, dtype=np.int64) + noise
        return noisy

    def releases(self) -> tuple[Release, ...]:
        """The T rounds, as a release whose multiplier ``1/√(2ρ)`` has the same RDP curve
        (``ρα``) as the zCDP bound: account it with the RDP accountant only."""
        from privrank.privacy.calibration import Release  # the server's side only

        return (
            Release(
                mechanism=self.name,
                statistic="the securely aggregated sum of the clients' clipped, rounded updates",
                sensitivity=self.sensitivity,
                noise_multiplier=1.0 / math.sqrt(2.0 * self.round_rho()),
                count=self.config.rounds,
            ),
        )

    def epsilon_after(self, rounds: int) -> float:
        """ε at the config's δ of the first ``rounds`` rounds."""
        return ddg_epsilon(self.round_rho(), rounds, self.config.delta)

    def wrap_probability(self) -> float:
        """Upper bound on the chance that a round's sum wraps around the modulus."""
        c = self.config
        return wrap_probability(
            self.sigma, c.max_clients, self.sensitivity, c.dimension, c.modulus_bits
        )

    def describe(self) -> str:
        """The guarantee and the trust model in words."""
        c = self.config
        text = (
            f"Distributed discrete Gaussian (Kairouz, Liu & Steinke 2021): ({c.epsilon:g}, "
            f"{c.delta:.3g})-DP over {c.rounds} round(s) for one user's update (replaced by "
            f"zero, the user still taking part), accounted by the RDP accountant from a "
            f"{self.round_rho():.4g}-zCDP bound per round with at least {c.min_clients} "
            f"clients' noise in every released sum (more survivors only add noise). Each "
            f"client clips to L2 norm {c.l2_clip:g}, rounds at scale {self.scale:g} (L2 bound "
            f"{self.sensitivity:.4g} grid units) and adds discrete Gaussian noise of sigma "
            f"{self.sigma:.4g} grid units before masking. The server is untrusted for "
            "individual updates: it sees only the secure aggregate (SecAgg+), already noised; "
            "no party sees an un-noised sum. The modular reduction is post-processing; the "
            f"chance of a wrap-around is at most {self.wrap_probability():.2g} per round."
        )
        if self.noise_scale != 1.0:
            text = f"NOT PRIVATE: the noise was scaled by {self.noise_scale:g} for testing. {text}"
        return text

    # -- client and server steps ----------------------------------------------------------------
    def encode(
        self, update: np.ndarray, rng: np.random.Generator, *, client_id: int | None = None
    ) -> np.ndarray:
        """One client's input to secure aggregation: check, round, noise, reduce mod 2^b.

        Args:
            update: The client's update (d floats, L2 norm ≤ ``l2_clip``: clip it first,
                :func:`clip_l2`, and count the clipped clients).
            rng: The client's noise generator (rounding and noise).
            client_id: Named in errors.

        Raises:
            UpdateOutOfRange: Norm above the bound, wrong length or a value not finite.
        """
        encoded, refused = self.encode_batch(np.asarray(update)[None, :], rng)
        if refused.size:
            self._refuse(np.asarray(update), client_id)
        row: np.ndarray = encoded[0]
        return row

    def encode_batch(
        self, updates: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode` for every row of an n × d batch; refused rows are counted, not encoded.

        Returns:
            ``(encoded, refused)``: the accepted rows as ring elements (uint64) and the indices
            of the refused rows (norm above the bound or not finite).
        """
        integers, refused = self.round_batch(updates, rng)
        noisy = self.add_noise(integers, rng)
        mask = np.uint64((1 << self.config.modulus_bits) - 1)
        return noisy.view(np.uint64) & mask, refused

    def round_batch(
        self, updates: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The first steps of :meth:`encode_batch`, without the noise: check, scale and
        conditionally round each row (``‖x̃‖₂ ≤ Δ₂``).

        A simulator that draws the survivors' summed noise at once
        (:func:`~privrank.privacy.discrete_gaussian.sample_discrete_gaussian_sum`) sums these.

        Returns:
            ``(integers, refused)``: the accepted rows on the grid (int64, not reduced) and the
            indices of the refused rows (norm above the bound or not finite).
        """
        c = self.config
        x = np.asarray(updates, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != c.dimension:
            raise ConfigError(f"updates must be n x {c.dimension}. Got shape {x.shape}")
        norms = np.linalg.norm(x, axis=1)
        bad = ~(np.isfinite(x).all(axis=1) & (norms <= c.l2_clip * (1 + 1e-12)))
        return self._conditional_rounding(x[~bad] * self.scale, rng), np.flatnonzero(bad)

    def sum_noise(self, n_clients: int, dimension: int, rng: np.random.Generator) -> np.ndarray:
        """The summed noise shares of ``n_clients`` clients, drawn at once (int64, ``dimension``):
        equal in distribution to the sum of ``n_clients`` calls of :meth:`add_noise`'s noise."""
        sigma = self.sigma * self.noise_scale
        return sample_discrete_gaussian_sum(sigma, n_clients, dimension, rng)

    def decode(self, total: np.ndarray) -> np.ndarray:
        """The unmasked modular sum back to update units: signed integer sum / scale."""
        bits = self.config.modulus_bits
        e = np.asarray(total, dtype=np.uint64) & np.uint64((1 << bits) - 1)
        signed = e.astype(np.int64)
        signed = np.where(signed >= 2 ** (bits - 1), signed - (1 << bits), signed)
        return signed.astype(np.float64) / self.scale

    def sum_noise_std(self, n_clients: int) -> float:
        """Standard deviation per coordinate of the decoded sum's noise with ``n_clients``."""
        return math.sqrt(n_clients * discrete_gaussian_variance(self.sigma)) / self.scale

    def _conditional_rounding(self, scaled: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Unbiased stochastic rounding, redrawn per row until ``‖x̃‖₂ ≤ Δ₂``."""
        low = np.floor(scaled)
        out = np.empty(scaled.shape, dtype=np.int64)
        todo = np.arange(scaled.shape[0])
        for _ in range(_MAX_ROUNDING_TRIES):
            if todo.size == 0:
                return out
            frac = scaled[todo] - low[todo]
            draw = low[todo] + (rng.random(frac.shape) < frac)
            ok = np.linalg.norm(draw, axis=1) <= self.sensitivity
            out[todo[ok]] = draw[ok].astype(np.int64)
            todo = todo[~ok]
        raise RuntimeError(  # probability at most β^200 per row
            f"conditional rounding failed {_MAX_ROUNDING_TRIES} times for {todo.size} row(s)"
        )

    def _refuse(self, update: np.ndarray, client_id: int | None) -> None:
        c = self.config
        who = "an update" if client_id is None else f"client {client_id}'s update"
        norm = float(np.linalg.norm(update))
        raise UpdateOutOfRange(
            f"{who} has L2 norm {norm!r} (or a value that is not finite), above the clipping "
            f"bound {c.l2_clip:g}; it is refused, not clipped (clip explicitly with clip_l2 "
            "and count the clipped clients)",
            client_id=client_id,
            count=1,
            index=-1,
            value=norm,
        )


class RoundSpender:
    """Spends a distributed-DP training run from the budget ledger, round by round.

    Round r reserves ``ε_r − ε_{r−1}`` (and δ in round 1), where ``ε_r`` is the RDP-accounted ε
    of the first r rounds at the run's δ: the ledger's sum after r rounds is exactly ``ε_r``,
    the guarantee of what has been released so far, and a run stopped early spends no more.
    Call :meth:`round` around the server's *unmasking* of each round: a round that aborts
    (:class:`~privrank.privacy.crypto.secagg.SecAggAbort`) releases nothing and its
    reservation is given back; a budget the round would exceed refuses the round before
    anything is unmasked.

    Args:
        mechanism: The calibrated mechanism (its T rounds are the most this run may spend).
        ledger: The budget ledger.
        budget_key: The dataset key to spend from.
        description: What the run is (recorded with each round).
    """

    def __init__(
        self,
        mechanism: DistributedDiscreteGaussian,
        ledger: Ledger,
        budget_key: str,
        description: str,
    ) -> None:
        self.mechanism = mechanism
        self.ledger = ledger
        self.budget_key = budget_key
        self.description = description
        self.rounds_spent = 0
        self.epsilon_spent = 0.0

    @contextmanager
    def round(self) -> Iterator[Reservation]:
        """Reserve the next round's ε (and δ in round 1), yield, commit; release on error.

        Raises:
            PrivacyBudgetExceeded: The ledger's budget does not cover the round, or the run
                already made the T rounds the mechanism was calibrated for.
        """
        total = self.mechanism.config.rounds
        if self.rounds_spent >= total:
            raise PrivacyBudgetExceeded(
                f"the distributed-DP mechanism was calibrated for {total} round(s); round "
                f"{self.rounds_spent + 1} would exceed its (ε, δ)"
            )
        after = self.mechanism.epsilon_after(self.rounds_spent + 1)
        delta = self.mechanism.config.delta if self.rounds_spent == 0 else 0.0
        label = f"{self.description} (distributed DP round {self.rounds_spent + 1}/{total})"
        with self.ledger.spend(self.budget_key, after - self.epsilon_spent, delta, label) as r:
            yield r
        self.rounds_spent += 1
        self.epsilon_spent = after
