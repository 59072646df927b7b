"""DP-FedAvg: user-level DP for federated training (McMahan et al. 2018; Andrew et al. 2021).

One **client is one device, holding one user's entire history**: the unit of privacy is the
user, and neighbouring runs differ by adding or removing one device (all of its rounds).

Each round :math:`t` the server samples a cohort by **Poisson sampling** (every one of the
:math:`N` devices independently with probability :math:`q = m/N`, :math:`m` the expected cohort
size); each sampled device computes its update :math:`\\Delta_u` and *clips it itself* to L2 norm
:math:`C_t` (the server checks the norm and refuses any update above it); the server releases

.. math:: \\tilde S_t = \\sum_{u \\in \\mathcal C_t} \\Delta_u + \\mathcal N(0, (z_\\Delta C_t)^2 I)

and divides by the *expected* cohort size :math:`m` (never the realised one, which is private).

**Adaptive clipping** (Andrew et al., "Differentially Private Learning with Adaptive Clipping",
NeurIPS 2021): each device also reports :math:`b_u = \\mathbb 1[\\lVert\\Delta_u\\rVert \\le C_t]`;
the server releases :math:`\\tilde B_t = \\sum_u (b_u - \\tfrac12) + \\mathcal N(0, \\sigma_b^2)`
(sensitivity 1/2), estimates the unclipped fraction :math:`\\bar b = \\tilde B_t/m + \\tfrac12`
and sets :math:`C_{t+1} = C_t \\exp(-\\eta_C(\\bar b - \\gamma))` (:math:`\\gamma`: the target
quantile). The two Gaussian releases of a round together are one Gaussian mechanism with
multiplier :math:`z` where :math:`z^{-2} = z_\\Delta^{-2} + (2\\sigma_b)^{-2}`: the accountant
composes that :math:`z`; :math:`\\sigma_b = m/20` (the paper's choice) and :math:`z_\\Delta =
(z^{-2} - (2\\sigma_b)^{-2})^{-1/2}`.

**Accounting.** :math:`T` Poisson-subsampled Gaussian rounds with multiplier :math:`z`, composed
by the PLD accountant of dp_accounting (RDP as the cross-check), with one Gaussian release of the
cold-start item counts (each device at most :math:`c` items, sensitivity :math:`\\sqrt c`, noise
set so that it alone is :math:`(0.1\\varepsilon, \\delta)`-DP) composed in.

**Fixed cohorts** (``sampling="fixed"``): each round's cohort is exactly :math:`K` of the
:math:`N` devices, drawn uniformly without replacement. dp_accounting accounts this only under
**replace-one adjacency** (:math:`N` is public; neighbouring runs differ by one device's entire
history replaced by another's) and only by RDP (Wang, Balle & Kasiviswanathan 2019, Thm. 27,
:func:`~privrank.privacy.accounting.fixed_cohort_event`); its PLD has no such event, so a fixed-
cohort plan is calibrated and reported by RDP, with no second accountant to cross-check it.
Under replace-one every sensitivity doubles against add/remove: the clipped sum moves by up to
:math:`2C`, the clipped-bit count by 1, the item counts by :math:`\\sqrt{2c}`. So the rounds are
the event ``SampledWithoutReplacement(N, K, Gaussian(z/2))`` (the server's noise is still
:math:`z_\\Delta C` on the sum, and :math:`z`, :math:`z_\\Delta`, :math:`\\sigma_b` relate as
above), and the counts' noise is :math:`\\sqrt 2` times the Poisson plan's (it alone is
:math:`(0.1\\varepsilon, \\delta)`-DP under replace-one). The mean divides by :math:`K`.

**Released rounds.** With Poisson sampling the number of sampled devices depends on who is in
the data, so no release decision may depend on it: every round of a Poisson plan is released
and charged, a round that sampled no device (or whose updates were all refused) releasing the
noise alone (the sum over an empty cohort plus the noise: exactly the sampled Gaussian
mechanism the accountant composes). Skipping such rounds would publish, unnoised, whether the
cohort was small, which no accountant here covers (:mod:`privrank.federated.rounds`). A fixed
cohort's size is public, so its rounds are released too.

**Trust model.** The server sees each sampled device's *clipped* update (no secure aggregation
here; :mod:`privrank.privacy.crypto` replaces the sum) and must add the noise honestly; the
released item-side model, and everything computed from it, is (ε, δ)-DP for the user. Histories
and user factors never leave the device. The sampling must be the Poisson sampling above, run
by the server; a device that cannot be reached when sampled is treated as not sampled (which only
lowers its participation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.calibration import (
    PLD_DISCRETIZATION,
    POPULARITY_SHARE,
    Release,
    calibrate_multiplier,
    composed_epsilon,
    gaussian_multiplier,
)
from privrank.privacy.mechanism import (
    Mechanism,
    PrivacyGuarantee,
    compose_guarantee,
    current_noise_scale,
    register_mechanism,
)
from privrank.privacy.spec import AccountantKind, PrivacySpec

#: How a round's cohort is drawn.
Sampling = Literal["poisson", "fixed"]

__all__ = ["AdaptiveClipping", "DPFedAvgMechanism", "FedAvgPlan", "plan_dp_fedavg"]


@dataclass(frozen=True)
class AdaptiveClipping:
    """Settings of adaptive clipping (Andrew et al. 2021).

    Attributes:
        target_quantile: :math:`\\gamma`, the fraction of updates to leave unclipped.
        learning_rate: :math:`\\eta_C`, the geometric step of the clipping norm.
        bit_noise_fraction: :math:`\\sigma_b / m` (the paper uses 1/20).
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    bit_noise_fraction: float = 0.05


@dataclass(frozen=True)
class FedAvgPlan:
    """The sampling, length and noise of a DP-FedAvg run, calibrated to a spec.

    Attributes:
        population: :math:`N`, the devices sampled from.
        expected_cohort: :math:`m = qN`, the divisor of every round's sum.
        sampling_rate: :math:`q`.
        rounds: :math:`T`.
        noise_multiplier: :math:`z` of one round as the accountant composes it.
        update_noise_multiplier: :math:`z_\\Delta`, the multiplier on the update sum.
        bit_noise_std: :math:`\\sigma_b` of the clipped-bit count (``None``: fixed clipping).
        popularity_noise_multiplier: σ/Δ of the cold-start item counts.
        contribution_bound: :math:`c`.
        delta: δ.
        accountant: The accountant (the spec's; ``rdp`` for a fixed cohort).
        sampling: ``poisson`` (add/remove adjacency) or ``fixed`` (exactly ``expected_cohort``
            devices without replacement; replace-one adjacency, see the module docstring).
    """

    population: int
    expected_cohort: float
    sampling_rate: float
    rounds: int
    noise_multiplier: float
    update_noise_multiplier: float
    bit_noise_std: float | None
    popularity_noise_multiplier: float
    contribution_bound: int
    delta: float
    accountant: AccountantKind
    sampling: Sampling = "poisson"

    def releases(self, rounds: int | None = None) -> tuple[Release, ...]:
        """The composition after ``rounds`` released rounds (default: all of them)."""
        done = self.rounds if rounds is None else rounds
        population = self.population if self.sampling == "fixed" else None
        popularity = _popularity(
            self.popularity_noise_multiplier, self.contribution_bound, population
        )
        if done == 0:
            return (popularity,)
        return (popularity, _rounds(self.sampling_rate, self.noise_multiplier, done, population))

    def epsilon_after(self, rounds: int) -> float:
        """ε (by the plan's accountant) once ``rounds`` rounds were released."""
        return composed_epsilon(
            self.releases(rounds), self.delta, self.accountant, PLD_DISCRETIZATION
        )


def _popularity(multiplier: float, bound: int, population: int | None = None) -> Release:
    """The counts' release; ``multiplier`` is σ/√c. With ``population`` (a fixed-cohort plan)
    it is stated against the replace-one sensitivity √(2c)."""
    if population is None:
        return Release("gaussian", "the item counts", math.sqrt(bound), float(multiplier))
    return Release(
        "gaussian", "the item counts", math.sqrt(2 * bound), float(multiplier) / math.sqrt(2)
    )


def _rounds(rate: float, multiplier: float, rounds: int, population: int | None = None) -> Release:
    """The rounds' release; ``multiplier`` is :math:`z` (σ/C of the combined round). With
    ``population``: fixed cohorts of ``rate · population``, against the replace-one
    sensitivity 2C (multiplier z/2)."""
    return Release(
        "dp-fedavg",
        "the summed clipped device updates (and clipped-bit count)",
        1.0 if population is None else 2.0,
        float(multiplier) if population is None else float(multiplier) / 2.0,
        count=int(rounds),
        sampling_rate=float(rate),
        population=population,
    )


def plan_dp_fedavg(
    spec: PrivacySpec,
    population: int,
    expected_cohort: int,
    rounds: int,
    adaptive: AdaptiveClipping | None = None,
    sampling: Sampling = "poisson",
) -> FedAvgPlan:
    """Calibrate :math:`z` so that the counts and :math:`T` rounds meet the spec's (ε, δ).

    Args:
        spec: A resolved spec with a contribution bound.
        population: :math:`N` (≥ 1).
        expected_cohort: :math:`m` (≥ 1, capped at :math:`N`): the expected cohort (Poisson)
            or the cohort :math:`K` (fixed).
        rounds: :math:`T` (≥ 1).
        adaptive: Adaptive clipping settings, or ``None`` (fixed :math:`C`).
        sampling: ``poisson`` or ``fixed`` (replace-one, RDP: see the module docstring).

    Raises:
        ConfigError: Bad sizes, an unresolved spec, no contribution bound, or a σ_b too small
            for the calibrated :math:`z` (raise the cohort).
    """
    delta = float(spec.require_delta())
    bound = spec.require_contribution_bound("DP-FedAvg")
    for name, value in (
        ("population", population),
        ("cohort", expected_cohort),
        ("rounds", rounds),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"DP-FedAvg: {name} must be an integer ≥ 1. Got {value!r}")
    if sampling not in ("poisson", "fixed"):
        raise ConfigError(f"DP-FedAvg: sampling must be poisson or fixed. Got {sampling!r}")
    cohort = min(int(expected_cohort), int(population))
    rate = cohort / int(population)
    fixed = None if sampling == "poisson" else int(population)
    accountant_name: AccountantKind = spec.accountant if fixed is None else "rdp"
    # σ/√c of the counts: their share alone is (0.1 ε, δ)-DP (√2 more under replace-one)
    popularity = gaussian_multiplier(POPULARITY_SHARE * float(spec.epsilon), delta)
    popularity *= 1.0 if fixed is None else math.sqrt(2.0)
    z = calibrate_multiplier(
        float(spec.epsilon),
        delta,
        (_popularity(popularity, bound, fixed), _rounds(rate, 1.0, int(rounds), fixed)),
        accountant_name=accountant_name,
        pld_discretization=PLD_DISCRETIZATION,
    )
    z *= 1.0 if fixed is None else 2.0  # the calibrated event multiplier is z/2 under replace-one
    bit_std = None
    z_update = z
    if adaptive is not None:
        bit_std = adaptive.bit_noise_fraction * cohort
        remainder = z**-2 - (2.0 * bit_std) ** -2
        if remainder <= 0:
            raise ConfigError(
                f"DP-FedAvg: adaptive clipping's bit noise (sigma_b = {bit_std:.3g}) uses more "
                f"than the whole round's budget (z = {z:.3g}); use larger cohorts or fixed clipping"
            )
        z_update = remainder**-0.5
    return FedAvgPlan(
        population=int(population),
        expected_cohort=float(cohort),
        sampling_rate=rate,
        rounds=int(rounds),
        noise_multiplier=float(z),
        update_noise_multiplier=float(z_update),
        bit_noise_std=bit_std,
        popularity_noise_multiplier=float(popularity),
        contribution_bound=bound,
        delta=delta,
        accountant=accountant_name,
        sampling=sampling,
    )


@register_mechanism("dp-fedavg")
class DPFedAvgMechanism(Mechanism[np.ndarray, np.random.Generator]):
    """One DP-FedAvg round's release (see the module docstring): Gaussian noise
    :math:`\\mathcal N(0, (s z_\\Delta C_t)^2)` on the summed clipped updates and, with adaptive
    clipping, :math:`\\mathcal N(0, (s\\sigma_b)^2)` on the clipped-bit count (:math:`s`: the test
    noise scale, 1 for real runs).

    Args:
        plan: The calibrated plan.
        clipping_norm: :math:`C_0`.
        adaptive: Adaptive clipping settings (must match the plan's), or ``None``.
    """

    def __init__(
        self, plan: FedAvgPlan, clipping_norm: float, adaptive: AdaptiveClipping | None = None
    ) -> None:
        if not (math.isfinite(clipping_norm) and clipping_norm > 0):
            raise ConfigError(f"DP-FedAvg: the clipping norm must be > 0. Got {clipping_norm!r}")
        if (adaptive is None) != (plan.bit_noise_std is None):
            raise ConfigError("DP-FedAvg: adaptive clipping must match the plan")
        self.plan = plan
        self.adaptive = adaptive
        self.sensitivity = float(clipping_norm)
        self.noise_multiplier = plan.update_noise_multiplier
        self.noise_scale = current_noise_scale()

    @property
    def clipping_norm(self) -> float:
        """:math:`C_t`, the bound every update of the current round must meet."""
        return self.sensitivity

    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """:math:`z` of the plan (calibrated by :func:`plan_dp_fedavg`)."""
        return self.plan.noise_multiplier

    def add_noise(self, statistic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The round's noisy sum: ``statistic + N(0, (s z_Δ C_t)²)`` (a new array)."""
        std = self.applied_std
        out = np.asarray(statistic, dtype=np.float64)
        if std > 0:
            out = out + rng.normal(0.0, std, size=out.shape)
        return out

    def noisy_unclipped_fraction(self, unclipped: int, rng: np.random.Generator) -> float:
        """:math:`\\bar b`: the released estimate of the fraction of unclipped updates."""
        if self.plan.bit_noise_std is None:
            raise ConfigError("DP-FedAvg: no adaptive clipping in this plan")
        cohort = self.plan.expected_cohort
        centred = unclipped - 0.5 * cohort  # Σ(b_u - 1/2) over the expected cohort
        std = self.noise_scale * self.plan.bit_noise_std
        noisy = centred + (rng.normal(0.0, std) if std > 0 else 0.0)
        return float(noisy / cohort + 0.5)

    def adapt(self, unclipped_fraction: float) -> float:
        """Move :math:`C` towards the target quantile (post-processing); returns the new C."""
        if self.adaptive is None:
            return self.sensitivity
        step = self.adaptive.learning_rate * (unclipped_fraction - self.adaptive.target_quantile)
        self.sensitivity = float(self.sensitivity * math.exp(-step))
        return self.sensitivity

    def releases(self) -> tuple[Release, ...]:
        """The cold-start counts and the plan's rounds."""
        return self.plan.releases()

    def describe(self) -> str:
        """The mechanism in plain words."""
        clipping = (
            "fixed clipping"
            if self.adaptive is None
            else f"adaptive clipping to the {self.adaptive.target_quantile:g} quantile"
        )
        sampled = (
            f"each device sampled with probability {self.plan.sampling_rate:.4g} (Poisson; "
            f"expected cohort {self.plan.expected_cohort:g})"
            if self.plan.sampling == "poisson"
            else f"a fixed cohort of {self.plan.expected_cohort:g} of {self.plan.population} "
            "devices drawn without replacement"
        )
        return (
            f"DP-FedAvg: {self.plan.rounds} rounds, {sampled}, device-side {clipping}, Gaussian "
            f"noise with multiplier {self.plan.update_noise_multiplier:.4g} on the summed updates"
        )


def dp_fedavg_guarantee(
    plan: FedAvgPlan,
    spec: PrivacySpec,
    rounds: int,
    *,
    noise_scale: float,
    secure_aggregation: bool = False,
) -> PrivacyGuarantee:
    """The guarantee of a run that released the counts and ``rounds`` rounds of ``plan``.

    With ``secure_aggregation`` (central DP over SecAgg+, fixed cohorts only) the server sees
    only the cohort's sum; a round SecAgg+ aborts is decided by the round's seed alone (the
    cohort's size is public, refused devices send zero) and is neither released nor charged.
    """
    releases = plan.releases(rounds)
    names = ("pld", "rdp") if plan.sampling == "poisson" else ("rdp",)
    by = {name: composed_epsilon(releases, plan.delta, name, PLD_DISCRETIZATION) for name in names}
    if plan.sampling == "poisson":
        accounting = (
            f"one Gaussian release of the item counts and {rounds} Poisson-subsampled Gaussian "
            f"rounds (q = {plan.sampling_rate:.4g}, z = {plan.noise_multiplier:.4g}) composed by "
            f"the {plan.accountant.upper()} accountant (dp_accounting): PLD ε = {by['pld']:.4g}, "
            f"RDP ε = {by['rdp']:.4g}, at δ = {plan.delta:.3g}; add/remove-one adjacency"
        )
    else:
        accounting = (
            f"one Gaussian release of the item counts and {rounds} Gaussian rounds on fixed "
            f"cohorts of {plan.expected_cohort:g} of {plan.population} devices drawn without "
            f"replacement (z = {plan.noise_multiplier:.4g}; z/2 against the replace-one "
            f"sensitivity 2C) composed by the RDP accountant of dp_accounting: RDP ε = "
            f"{by['rdp']:.4g} at δ = {plan.delta:.3g}; replace-one adjacency (the number of "
            "devices is public); no PLD cross-check (dp_accounting's PLD has no sampling "
            "without replacement)"
        )
    sampler = "Poisson" if plan.sampling == "poisson" else "fixed cohorts without replacement"
    seen = (
        "only the sum of each cohort's clipped updates (SecAgg+; a round it aborts, decided by "
        "the round's seed alone, releases nothing and is not charged)"
        if secure_aggregation
        else "each sampled device's clipped update (no secure aggregation)"
    )
    released = (
        "the item factors after each round and the noisy item counts; the unit of privacy is one "
        f"device holding one user's whole history; the server sees {seen} and is trusted to "
        f"sample ({sampler}) and add the noise; user factors and histories never leave the "
        "devices"
    )
    resolved = spec.model_copy(
        update={"epsilon": max(by[plan.accountant], 1e-12), "accountant": plan.accountant}
    )
    return compose_guarantee(
        releases,
        resolved,
        mechanism="dp-fedavg+gaussian-item-counts",
        calibration=plan.accountant,
        accounting=accounting,
        n_users=plan.population,
        released=released,
        pld_discretization=PLD_DISCRETIZATION,
        noise_scale=noise_scale,
    )
