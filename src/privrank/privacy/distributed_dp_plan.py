"""A federated run under distributed DP: the item counts and T rounds, each a secure sum.

A run of the simulator (or a deployment) with ``--aggregation secagg --distributed-dp`` makes
``1 + T`` releases, each the SecAgg+ modular sum of devices' clipped, rounded and discrete
Gaussian-noised vectors (:class:`~privrank.privacy.distributed_dp.DistributedDiscreteGaussian`):

- **release 0, the item counts**: every device of the first cohort sends its (at most ``c``)
  items as a 0/1 vector (L2 norm ≤ √c), so that the server's preconditioner and the cold-start
  popularity come from a private sum;
- **releases 1 … T, the rounds**: every device of the round's cohort sends its item-side update
  clipped to L2 norm ``C``.

Each release is ``ρ``-zCDP (:func:`~privrank.privacy.distributed_dp_accounting.ddg_round_rho`,
with the noise of at least ``min_clients`` devices in the sum); zCDP composes by adding ρ, so
after ``r`` rounds the run is ``(ρ_counts + r·ρ_round)``-zCDP, converted to (ε, δ) by
dp_accounting's RDP accountant (:func:`~privrank.privacy.distributed_dp_accounting.ddg_epsilon`).

**Budget split.** The counts get the same share of ε as in DP-FedAvg
(:data:`~privrank.privacy.dpsgd.POPULARITY_SHARE`, 10 %): their mechanism is calibrated to
``0.1 ε`` alone; the rounds get the rest of the zCDP budget: with ``ρ*`` the largest ρ whose
(ε, δ) conversion is at most ε, the round mechanism is calibrated to the ε of ``ρ* − ρ_counts``
over T rounds. :meth:`DistributedDPPlan.epsilon_after` composes what was actually calibrated,
and planning refuses a plan whose composition exceeds ε.

**What is claimed, and what is not.**

- Unit of privacy: one device = one user; neighbouring runs replace one user's contribution to
  every release by zero while the user still adds its noise (Kairouz, Liu & Steinke 2021; the
  relation of :mod:`privrank.privacy.distributed_dp_accounting`).
- By default no amplification by sampling is claimed: the bound holds for a user that takes
  part in every round, so it holds for Poisson-sampled cohorts too (a user not sampled
  contributes zero, which is a neighbouring input of the same relation). This is more noise
  than central DP-FedAvg needs at the same ε (which is amplified by its Poisson sampling).
- **Secret sampling** (``sampling_rate=q``, opt-in): each round includes each user's update
  with probability q, independently, and the parties that see the released sums do not learn
  who was included. Then each round is accounted as the Poisson subsampling of its zCDP bound
  (:func:`~privrank.privacy.distributed_dp_accounting.ddg_sampled_epsilon`: the binomial
  expansion of Mironov, Talwar & Zhang 2019 for the forward order, proven bounds for the
  reverse one, never above Zhu & Wang 2019's general bound);
  the counts (release 0) stay un-amplified. Who is trusted for what in this mode:

  * *the sampler* is trusted for sampling only: to draw the inclusion coins with probability q
    from randomness no observer of the sums knows, and to keep them secret. It never sees an
    update. Deployable as (a) **device self-sampling**: every device of the population takes
    part in every round's secure sum and adds its noise share, but puts its clipped update in
    only when its own private coin (probability q) says so, sending zeros otherwise, so that
    even the server cannot tell who was sampled (cost: all N devices in every SecAgg+ round);
    or (b) a **sampling service** that picks the cohort and relays its messages so that the
    server does not learn the cohort's identities;
  * *the server* is untrusted for individual updates, as above. In (a) it also gets the
    amplified ε. In (b), a server that does learn who was in the cohort only gets the
    un-amplified guarantee of the same noise, which
    :meth:`DistributedDPPlan.unamplified_epsilon_after` reports;
  * *each device* is trusted, as before, to clip and add its noise, and in (a) to flip its
    coin honestly.
- Dropouts: ``min_clients`` is the fewest survivors SecAgg+ unmasks (clients refuse fewer);
  more survivors only add noise (post-processing).
- Modular wrap-around: post-processing; its probability per release is bounded
  (``max_wrap_probability``) with ``max_clients`` devices in the sum.
- Trust: the server is untrusted for individual updates and sees only the noisy modular sums;
  it is honest-but-curious for the protocol (SecAgg+'s model) and reports survivors truthfully;
  every device is trusted to clip and to add its own noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from privrank.errors import ConfigError
from privrank.privacy.calibration import POPULARITY_SHARE, Release
from privrank.privacy.distributed_dp import DistributedDiscreteGaussian, DistributedDPConfig
from privrank.privacy.distributed_dp_accounting import ddg_epsilon, ddg_sampled_epsilon
from privrank.privacy.mechanism import PrivacyGuarantee
from privrank.privacy.spec import PrivacySpec

__all__ = ["DistributedDPPlan", "distributed_dp_guarantee", "plan_distributed_dp"]

_BISECTION_STEPS = 80


@dataclass(frozen=True)
class DistributedDPPlan:
    """The calibrated mechanisms of a distributed-DP federated run.

    Attributes:
        counts: The mechanism of release 0 (the item counts, one release).
        rounds: The mechanism of each round (calibrated for ``rounds`` rounds).
        epsilon: The run's target ε.
        delta: The run's δ.
        contribution_bound: ``c``, the items a device counts.
        population: Devices in the run.
    """

    counts: DistributedDiscreteGaussian
    rounds: DistributedDiscreteGaussian
    epsilon: float
    delta: float
    contribution_bound: int
    population: int
    sampling_rate: float | None = None

    @property
    def total_rounds(self) -> int:
        """T."""
        return self.rounds.config.rounds

    def rho_after(self, rounds: int) -> float:
        """ρ of the counts and the first ``rounds`` rounds (zCDP composes additively)."""
        return self.counts.round_rho() + rounds * self.rounds.round_rho()

    def epsilon_after(self, rounds: int) -> float:
        """ε at δ of the counts and the first ``rounds`` rounds, by the RDP accountant (with
        amplification by the secret sampling when the plan has a ``sampling_rate``)."""
        if self.sampling_rate is None or rounds < 1:
            return self.unamplified_epsilon_after(rounds)
        return ddg_sampled_epsilon(
            self.rounds.round_rho(),
            rounds,
            self.sampling_rate,
            self.delta,
            rho_fixed=self.counts.round_rho(),
        )

    def unamplified_epsilon_after(self, rounds: int) -> float:
        """ε at δ of the same noise without amplification (what a party that knows who was
        sampled gets)."""
        return ddg_epsilon(self.rho_after(rounds), 1, self.delta)

    def releases(self, rounds: int) -> tuple[Release, ...]:
        """The releases made after ``rounds`` rounds (each as a Gaussian of the same zCDP
        curve, multiplier ``1/√(2ρ)``: to be accounted by RDP only)."""
        counts = Release(
            mechanism=self.counts.name,
            statistic="the securely aggregated item counts of the first cohort (≤ c items each)",
            sensitivity=self.counts.sensitivity,
            noise_multiplier=1.0 / math.sqrt(2.0 * self.counts.round_rho()),
        )
        if rounds < 1:
            return (counts,)
        step = Release(
            mechanism=self.rounds.name,
            statistic="the securely aggregated sum of the devices' clipped item-side updates",
            sensitivity=self.rounds.sensitivity,
            noise_multiplier=1.0 / math.sqrt(2.0 * self.rounds.round_rho()),
            count=rounds,
        )
        return (counts, step)


def _largest_rho(epsilon: float, delta: float) -> float:
    """The largest ρ (to 1e-12 relative) whose RDP conversion at δ is at most ε."""
    return _largest(lambda rho: ddg_epsilon(rho, 1, delta) <= epsilon)


def _largest(fits: Callable[[float], bool]) -> float:
    """The largest ρ > 0 (by bisection) for which the monotone test ``fits`` holds."""
    low, high = 0.0, 1.0
    while fits(high):
        low, high = high, 2.0 * high
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def plan_distributed_dp(
    spec: PrivacySpec,
    *,
    population: int,
    n_items: int,
    dimension: int,
    rounds: int,
    min_clients: int,
    max_clients: int,
    modulus_bits: int,
    sampling_rate: float | None = None,
) -> DistributedDPPlan:
    """Calibrate the counts' and the rounds' distributed discrete Gaussians to the spec's (ε, δ).

    Args:
        spec: A resolved spec (ε, δ, ``clipping_norm`` C, ``max_interactions_per_user`` c).
        population: Devices in the run.
        n_items: Dimension of the counts.
        dimension: Dimension of a round's update.
        rounds: T.
        min_clients: The fewest survivors whose noise every released sum holds (≥ 2).
        max_clients: The most devices in one sum (bounds the wrap-around).
        modulus_bits: b of the ring Z_{2^b}.
        sampling_rate: q of the secret Poisson sampling (see the module docstring for who is
            trusted for it); ``None``: no amplification claimed.

    Raises:
        ConfigError: ``min_clients`` below 2 or above ``max_clients``, no contribution bound,
            or no calibration meets (ε, δ) inside the ring.
    """
    delta = float(spec.require_delta())
    bound = spec.require_contribution_bound("distributed DP")
    epsilon = float(spec.epsilon)
    if min_clients < 2:
        raise ConfigError(
            "distributed DP: min_clients must be ≥ 2 (the fewest devices whose noise is in "
            f"every released sum; each device adds 1/√min_clients of the noise). Got {min_clients}"
        )
    common = {
        "delta": delta,
        "min_clients": int(min_clients),
        "max_clients": int(max_clients),
        "modulus_bits": int(modulus_bits),
    }
    counts = DistributedDiscreteGaussian(
        DistributedDPConfig(
            epsilon=POPULARITY_SHARE * epsilon,
            l2_clip=math.sqrt(bound),
            dimension=int(n_items),
            rounds=1,
            **common,
        )
    )
    budget = _largest_rho(epsilon, delta)
    left = budget - counts.round_rho()
    if left <= 0:
        raise ConfigError(f"distributed DP: the item counts use the whole budget ε = {epsilon:g}")
    if sampling_rate is not None:
        if not 0 < sampling_rate <= 1:
            raise ConfigError(
                f"distributed DP: the sampling rate must be in (0, 1]. Got {sampling_rate!r}"
            )
        # The largest per-round ρ whose sampled composition with the counts stays within ε,
        # expressed as the ε of T·ρ in zCDP (what the round mechanism is calibrated to).
        per_round = _largest(
            lambda rho: (
                ddg_sampled_epsilon(
                    rho, int(rounds), sampling_rate, delta, rho_fixed=counts.round_rho()
                )
                <= epsilon
            )
        )
        left = per_round * int(rounds)
    step = DistributedDiscreteGaussian(
        DistributedDPConfig(
            epsilon=ddg_epsilon(left, 1, delta),
            l2_clip=float(spec.clipping_norm),
            dimension=int(dimension),
            rounds=int(rounds),
            **common,
        )
    )
    plan = DistributedDPPlan(
        counts, step, epsilon, delta, bound, int(population), sampling_rate=sampling_rate
    )
    total = plan.epsilon_after(int(rounds))
    if total > epsilon * (1.0 + 1e-9):
        raise ConfigError(  # pragma: no cover - the calibration is monotone; a guard, not a path
            f"distributed DP: the calibrated run spends ε = {total:.6g} > {epsilon:g}"
        )
    return plan


def distributed_dp_guarantee(
    plan: DistributedDPPlan, spec: PrivacySpec, rounds: int, *, noise_scale: float
) -> PrivacyGuarantee:
    """The guarantee of a run that released the counts and ``rounds`` rounds of ``plan``."""
    epsilon = plan.epsilon_after(rounds)
    accounting = (
        f"the item counts ({plan.counts.round_rho():.4g}-zCDP) and {rounds} round(s) "
        f"({plan.rounds.round_rho():.4g}-zCDP each) of the distributed discrete Gaussian "
        f"(Kairouz, Liu & Steinke 2021, Prop. 14), with at least "
        f"{plan.rounds.config.min_clients} devices' noise in every released sum, composed in "
        f"zCDP and converted by the RDP accountant (dp_accounting): ε = {epsilon:.4g} at "
        f"δ = {plan.delta:.3g}; "
        + (
            "no amplification by sampling claimed"
            if plan.sampling_rate is None
            else f"amplified by secret Poisson sampling at q = {plan.sampling_rate:.4g} "
            f"(Mironov, Talwar & Zhang 2019's expansion of the zCDP moments, both orders bounded; "
            f"the sampler trusted to keep the sample secret); a "
            f"party that knows who was sampled gets "
            f"ε = {plan.unamplified_epsilon_after(rounds):.4g}"
        )
    )
    released = (
        "the item factors after each round and the item counts, each computed from a SecAgg+ "
        "modular sum of the devices' clipped, rounded and discrete-Gaussian-noised vectors; the "
        "unit of privacy is one device holding one user's whole history (its contribution "
        "replaced by zero); the server is untrusted for individual updates and sees only the "
        "noisy sums (honest-but-curious for the protocol); each device is trusted to clip and "
        "add its own noise; user factors and histories never leave the devices"
    )
    return PrivacyGuarantee(
        mechanism="distributed-discrete-gaussian+secagg",
        epsilon=max(epsilon, 1e-12),
        delta=plan.delta,
        composition=plan.releases(rounds),
        accountant="rdp",
        calibration="rdp",
        epsilons={"rdp": epsilon},
        accounting=accounting,
        contribution_bound=plan.contribution_bound,
        selection=spec.selection,
        n_users=plan.population,
        released=released,
        noise_scale_for_testing=noise_scale,
        noise_seed=spec.noise_seed,
    )
