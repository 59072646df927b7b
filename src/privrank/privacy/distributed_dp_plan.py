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

**Adaptive clipping** (Andrew et al., NeurIPS 2021, under SecAgg+; ``adaptive``): each device
of a round appends one coordinate to its input, its clipping bit
:math:`b_u = \\mathbb 1[\\lVert\\Delta_u\\rVert \\le C_t] \\in \\{0, 1\\}` on the grid of a second
distributed discrete Gaussian (:attr:`DistributedDPPlan.bits`: dimension 1, L2 bound 1) with its
own noise share; the server unmasks only the noisy sum :math:`\\tilde B_t` of the bits together
with the noisy update sum, estimates the unclipped fraction :math:`\\bar b = \\tilde B_t / n_t`
(:math:`n_t` the surviving inputs, public to the server in SecAgg+) and sets
:math:`C_{t+1} = C_t \\exp(-\\eta_C(\\bar b - \\gamma))`. :math:`C_{t+1}` is computed from released
sums only (post-processing) and is public. The update mechanism is calibrated for :math:`C_0`;
a round at :math:`C_t` encodes every clipped update times :math:`C_0/C_t` and decodes the sum
times :math:`C_t/C_0` (:class:`~privrank.federated.secure_aggregation.SecAggAggregator`), so its
grid, sensitivity Δ₂ and ρ do not depend on :math:`C_t`.

*Accounting of the bit, and the proof.* The two coordinates are released together, with
independent noise. Under the neighbouring relation (one user's contribution to the round
replaced by zero) the update part moves by at most Δ₂ (grid units of :math:`C_0`) and the bit
part by at most Δ₂⁽ᵇ⁾ (the bit's rounded bound, exactly its scale: a 0/1 value times a power of
two is already an integer); each part alone is the distributed discrete Gaussian of its own
dimension and its ρ (:func:`~privrank.privacy.distributed_dp_accounting.ddg_round_rho`) holds
for *every* input of the other part. The release of the pair is the adaptive composition of the
two, so it is :math:`(\\rho_\\Delta + \\rho_b)`-zCDP (zCDP composes additively; Bun & Steinke
2016, Lemma 2.3), one mechanism of the round with one inclusion coin for both parts. So every
statement above holds with the round's ρ replaced by :math:`\\rho_\\Delta + \\rho_b`: T rounds
and the counts compose to :math:`\\rho_{counts} + T(\\rho_\\Delta + \\rho_b)`, and under secret
sampling each round is the subsampled :math:`(\\rho_\\Delta + \\rho_b)`-zCDP mechanism
(:func:`~privrank.privacy.distributed_dp_accounting.sampled_ddg_rdp`), since a device that is
not included contributes zero to both coordinates. This is the second option of the issue
(compose the two releases through the accountant), not the paper's single Gaussian with a
combined multiplier, which would need one grid for both.

*Calibration of the bit.* The bit's noise is set as in the paper: the accounted standard
deviation of the bit sum (the noise of ``min_clients`` devices, in counts) is
:math:`\\sigma_b = f\\,m` (:attr:`AdaptiveClipping.bit_noise_fraction
<privrank.privacy.dp_fedavg.AdaptiveClipping>` f = 1/20, m the expected cohort), i.e. the bit
mechanism is calibrated to :math:`\\rho_b \\le 1/(2\\sigma_b^2)`; with more survivors than
``min_clients`` the real noise is larger by :math:`\\sqrt{n_t/\\text{min\\_clients}}`. The update
mechanism gets the rest of the round's budget, :math:`\\rho_\\Delta = \\rho_{round} - \\rho_b`,
so the run's ε is the same target ε: at the same ε the update noise is a little larger than
with fixed clipping; at the same update noise ε is larger (the tests pin both).

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
from privrank.privacy.dp_fedavg import AdaptiveClipping
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
        sampling_rate: q of the secret sampling (``None``: no amplification claimed).
        bits: Adaptive clipping: the distributed discrete Gaussian of the clipping bit
            (dimension 1, L2 bound 1, calibrated for ``rounds`` rounds); ``None``: fixed
            clipping at the update mechanism's ``l2_clip``.
        adaptive: The adaptive clipping rule (with ``bits``).
    """

    counts: DistributedDiscreteGaussian
    rounds: DistributedDiscreteGaussian
    epsilon: float
    delta: float
    contribution_bound: int
    population: int
    sampling_rate: float | None = None
    bits: DistributedDiscreteGaussian | None = None
    adaptive: AdaptiveClipping | None = None

    @property
    def total_rounds(self) -> int:
        """T."""
        return self.rounds.config.rounds

    def round_rho(self) -> float:
        """ρ of one round: the update's, plus the clipping bit's with adaptive clipping (the
        two releases of a round compose additively in zCDP; module docstring)."""
        return self.rounds.round_rho() + (0.0 if self.bits is None else self.bits.round_rho())

    def rho_after(self, rounds: int) -> float:
        """ρ of the counts and the first ``rounds`` rounds (zCDP composes additively)."""
        return self.counts.round_rho() + rounds * self.round_rho()

    def epsilon_after(self, rounds: int) -> float:
        """ε at δ of the counts and the first ``rounds`` rounds, by the RDP accountant (with
        amplification by the secret sampling when the plan has a ``sampling_rate``)."""
        if self.sampling_rate is None or rounds < 1:
            return self.unamplified_epsilon_after(rounds)
        return ddg_sampled_epsilon(
            self.round_rho(),
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
        if self.bits is None:
            return (counts, step)
        bits = Release(
            mechanism=self.bits.name,
            statistic="the securely aggregated sum of the devices' clipping bits",
            sensitivity=self.bits.sensitivity,
            noise_multiplier=1.0 / math.sqrt(2.0 * self.bits.round_rho()),
            count=rounds,
        )
        return (counts, step, bits)


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
    adaptive: AdaptiveClipping | None = None,
    expected_cohort: int | None = None,
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
        adaptive: Adaptive clipping (the bit's release, module docstring); ``None``: fixed
            clipping at the spec's ``clipping_norm``.
        expected_cohort: m, the expected cohort (sets the bit's noise σ_b = f·m; required
            with ``adaptive``).

    Raises:
        ConfigError: ``min_clients`` below 2 or above ``max_clients``, no contribution bound,
            no calibration meets (ε, δ) inside the ring, or the bit's noise would use the
            whole round's budget.
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
    bits = None
    if adaptive is not None:
        if expected_cohort is None or expected_cohort < 1:
            raise ConfigError("distributed DP: adaptive clipping needs the expected cohort")
        sigma_b = adaptive.bit_noise_fraction * float(expected_cohort)
        rho_b = 0.5 / sigma_b**2  # the Gaussian's ρ at the paper's σ_b (sensitivity 1)
        if rho_b * int(rounds) >= left:
            raise ConfigError(
                f"distributed DP: adaptive clipping's bit noise (sigma_b = {sigma_b:.3g} "
                f"counts, rho = {rho_b:.3g} per round) uses the whole round's budget "
                f"(rho = {left / int(rounds):.3g}); use larger cohorts or fixed clipping"
            )
        bits = DistributedDiscreteGaussian(
            DistributedDPConfig(
                epsilon=ddg_epsilon(rho_b * int(rounds), 1, delta),
                l2_clip=1.0,
                dimension=1,
                rounds=int(rounds),
                **common,
            )
        )
        left -= bits.round_rho() * int(rounds)  # ≤ ρ_b·T: calibrated within 0.1 %
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
        counts,
        step,
        epsilon,
        delta,
        bound,
        int(population),
        sampling_rate=sampling_rate,
        bits=bits,
        adaptive=adaptive,
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
        f"({plan.round_rho():.4g}-zCDP each"
        + (
            ""
            if plan.bits is None
            else f": the update's {plan.rounds.round_rho():.4g} plus the clipping bit's "
            f"{plan.bits.round_rho():.4g} of adaptive clipping, composed additively"
        )
        + ") of the distributed discrete Gaussian "
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
    bits = (
        ""
        if plan.bits is None
        else " (and the clipping norm of adaptive clipping, from the noisy SecAgg+ sum of the "
        "devices' clipping bits)"
    )
    released = (
        f"the item factors after each round{bits} and the item counts, each computed from a "
        "SecAgg+ modular sum of the devices' clipped, rounded and discrete-Gaussian-noised "
        "vectors; the "
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
