"""The privacy-mechanism interface, its registry, and the guarantee a private fit records.

A :class:`Mechanism` is one user-level differentially private release procedure. Whatever it
releases, it answers the same questions (Opacus's accountant interface is the model):

- ``sensitivity``: Δ, the L2 norm by which adding or removing one user's entire history can
  move the released statistic (after contribution bounding or clipping);
- :meth:`Mechanism.calibrate`: the noise multiplier ``m = σ/Δ`` meeting a target (ε, δ) under a
  named accountant (``pld`` or ``rdp``, :data:`~privrank.privacy.calibration.ACCOUNTANTS`);
- :meth:`Mechanism.add_noise`: the release itself, the exact statistic plus calibrated Gaussian
  noise drawn from the caller's noise generator (never shared with other randomness);
- :meth:`Mechanism.releases`: what it releases, as
  :class:`~privrank.privacy.calibration.Release` objects for the one calibration and
  composition service (:mod:`privrank.privacy.calibration`);
- :meth:`Mechanism.describe`: the mechanism in plain words.

Mechanisms register under a name (:func:`register_mechanism`, :func:`mechanism_class`):
``gaussian`` (:class:`~privrank.privacy.mechanisms.GaussianMechanism`), ``dp-als``
(:class:`~privrank.privacy.dp_als.PrivateALSMechanism`), ``dp-sgd``
(:class:`~privrank.privacy.dpsgd.SampledGaussianMechanism`), ``distributed-discrete-gaussian``
(:class:`~privrank.privacy.distributed_dp.DistributedDiscreteGaussian`), ``ldp-sketch``
(:class:`~privrank.privacy.local_dp.mechanism.LocalSketchMechanism`, the device-side randomiser
of a local-DP Count Mean Sketch collection: pure ε-LDP, no Gaussian release) and ``dp-fedavg``
(:class:`~privrank.privacy.dp_fedavg.DPFedAvgMechanism`), ``label-rr-prior``
(:class:`~privrank.privacy.label_dp.RRWithPriorMechanism`: label DP, pure ε per example's label)
and ``laplace-summary-report``
(:class:`~privrank.privacy.conversion_reports.LaplaceHistogramMechanism`: pure ε per unit).

A :class:`PrivacyGuarantee` is the list of releases a fit composed, the total (ε, δ), the
accountant, and the unit of privacy (one user).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from privrank.errors import ConfigError
from privrank.privacy.accounting import DEFAULT_PLD_DISCRETIZATION
from privrank.privacy.calibration import ANALYTIC, Release, epsilons, other_accountant
from privrank.privacy.spec import AccountantKind, PrivacySpec

__all__ = [
    "Mechanism",
    "PrivacyGuarantee",
    "Release",
    "compose_guarantee",
    "current_noise_scale",
    "mechanism_class",
    "mechanism_names",
    "register_mechanism",
]

StatisticT = TypeVar("StatisticT")
GeneratorT = TypeVar("GeneratorT")

#: Test-only scale of every mechanism's noise (1 = calibrated). Set only through
#: :func:`_noise_scale_for_testing`, never from a :class:`PrivacySpec`.
_NOISE_SCALE: contextvars.ContextVar[float] = contextvars.ContextVar(
    "privrank_noise_scale", default=1.0
)


def current_noise_scale() -> float:
    """The factor every mechanism multiplies its calibrated noise by: 1 outside tests."""
    return _NOISE_SCALE.get()


@contextlib.contextmanager
def _noise_scale_for_testing(scale: float) -> Iterator[None]:
    """Scale the noise of every mechanism run inside the block (tests and audits only).

    ``scale=0`` disables the noise (to check that a private fit without noise equals the
    non-private one); ``0 < scale < 1`` is a deliberately broken mechanism (for the empirical
    audit). The guarantee then records ``noise_scale_for_testing`` and describes itself as not
    private. This is not part of the public API.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale >= 0):
        raise ConfigError(f"noise scale must be a finite number ≥ 0. Got {scale!r}")
    token = _NOISE_SCALE.set(float(scale))
    try:
        yield
    finally:
        _NOISE_SCALE.reset(token)


# -------------------------------------------------------------------- the interface
class Mechanism(ABC, Generic[StatisticT, GeneratorT]):
    """A user-level (ε, δ)-DP release: sensitivity, calibration, noise, accounting, words.

    Subclasses set ``sensitivity`` and ``noise_multiplier`` (usually by calling
    :meth:`calibrate` from their constructor) and register with :func:`register_mechanism`.

    Attributes:
        name: The registry name.
        sensitivity: Δ, the L2 sensitivity of the released statistic to one user's history.
        noise_multiplier: ``m = σ / Δ`` (calibrated; a test's noise scale is applied on top).
        noise_scale: The test noise scale in force when the mechanism was made (1 for real
            releases).
    """

    name: ClassVar[str]
    sensitivity: float
    noise_multiplier: float
    noise_scale: float

    @abstractmethod
    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """The smallest noise multiplier for which everything this mechanism releases meets
        (ε, δ) under ``accountant`` (implementations may be exact instead, and say so)."""

    @abstractmethod
    def add_noise(self, statistic: StatisticT, rng: GeneratorT) -> StatisticT:
        """One release: ``statistic`` (exact) plus the calibrated noise, drawn from ``rng``."""

    @abstractmethod
    def releases(self) -> tuple[Release, ...]:
        """What the mechanism releases, for the composition service."""

    @abstractmethod
    def describe(self) -> str:
        """The mechanism in plain words."""

    @property
    def noise_std(self) -> float:
        """σ = m · Δ, the calibrated standard deviation of the noise."""
        return self.noise_multiplier * self.sensitivity

    @property
    def applied_std(self) -> float:
        """The standard deviation actually drawn (``noise_std`` unless a test scaled it)."""
        return self.noise_std * self.noise_scale


_MECHANISMS: dict[str, type[Mechanism[Any, Any]]] = {}

MechanismT = TypeVar("MechanismT", bound=type[Mechanism[Any, Any]])


def register_mechanism(name: str) -> Callable[[MechanismT], MechanismT]:
    """Class decorator: register a mechanism under ``name`` (which it also sets as its
    ``name``).

    Raises:
        ConfigError: The name is taken by another class.
    """

    def decorate(cls: MechanismT) -> MechanismT:
        taken = _MECHANISMS.get(name)
        if taken is not None and taken is not cls:
            raise ConfigError(f"a privacy mechanism named {name!r} exists: {taken.__name__}")
        cls.name = name
        _MECHANISMS[name] = cls
        return cls

    return decorate


def mechanism_class(name: str) -> type[Mechanism[Any, Any]]:
    """The mechanism registered as ``name``.

    Raises:
        ConfigError: No mechanism of that name.
    """
    _load_builtin()
    cls = _MECHANISMS.get(name)
    if cls is None:
        raise ConfigError(
            f"unknown privacy mechanism {name!r}; the registered mechanisms are: "
            + ", ".join(mechanism_names())
        )
    return cls


def mechanism_names() -> list[str]:
    """Names of the registered mechanisms, sorted."""
    _load_builtin()
    return sorted(_MECHANISMS)


def _load_builtin() -> None:
    import importlib

    for module in (
        "mechanisms",
        "dp_als",
        "dpsgd",
        "distributed_dp",
        "local_dp.mechanism",
        "dp_fedavg",
        "label_dp",
        "conversion_reports",
    ):
        importlib.import_module(f"privrank.privacy.{module}")


# -------------------------------------------------------------------- the guarantee
@dataclass(frozen=True)
class PrivacyGuarantee:
    """What a private fit guarantees, recorded in the model and its saved artifact.

    The guarantee is the adaptive composition of ``composition`` (every release the fit made,
    in order), which is (``epsilon``, ``delta``)-DP for the unit of privacy ``unit``: adding or
    removing one user's entire history.

    Attributes:
        mechanism: Name of what produced the whole guarantee (e.g. ``gaussian-gram``,
            ``dp-sgd+gaussian-item-counts``).
        epsilon: ε of the whole fit (all releases composed).
        delta: δ of the whole fit.
        composition: The releases composed (:class:`~privrank.privacy.calibration.Release`:
            mechanism, statistic, sensitivity, noise multiplier, count, sampling rate).
        accountant: The spec's accountant (``pld`` or ``rdp``).
        calibration: What set the noise: ``analytic-gaussian`` (the exact Gaussian condition,
            no accountant) or the accountant's name.
        epsilons: ε of the same composition at ``delta`` by each accountant (``pld``, ``rdp``):
            the cross-check.
        accounting: How ε was computed, in words.
        contribution_bound: ``c``, the cap on rows per user (``None``: no cap).
        selection: How a capped user's rows were chosen (``most_recent`` or ``uniform``).
        n_users: Users in the training vocabulary (δ's default is ``1 / (10 · n_users)``).
        released: What the fit publishes, in words (``None``: the statistics themselves).
        unit: The unit of privacy: always ``"user"`` (add/remove one user's entire history).
        noise_scale_for_testing: 1 for a real release; anything else means the noise was
            deliberately scaled by a test or an audit and the claim does not hold.
        noise_seed: The fixed seed of the noise generator (``PrivacySpec.noise_seed``), or
            ``None`` for noise from the OS's secure source. A fixed seed makes the noise
            reproducible by anyone who knows it, so such a fit is for testing only: it is not
            private (:attr:`is_private` is false) and cannot be released.
    """

    mechanism: str
    epsilon: float
    delta: float
    composition: tuple[Release, ...]
    accountant: str
    calibration: str
    epsilons: dict[str, float]
    accounting: str
    contribution_bound: int | None
    selection: str
    n_users: int
    released: str | None = None
    unit: str = "user"
    noise_scale_for_testing: float = 1.0
    noise_seed: int | None = None
    _main: Release = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.composition:
            raise ValueError("a privacy guarantee needs at least one release")
        composition = tuple(
            r if isinstance(r, Release) else Release.from_dict(r) for r in self.composition
        )
        object.__setattr__(self, "composition", composition)
        subsampled = [r for r in composition if r.sampling_rate is not None]
        object.__setattr__(self, "_main", subsampled[-1] if subsampled else composition[-1])

    # -- the main release (the last one, or the subsampled steps of DP-SGD) -------------------
    @property
    def releases(self) -> int:
        """Number of releases composed (each count and step counts once)."""
        return sum(r.count for r in self.composition)

    @property
    def statistic(self) -> str:
        """What the main release (the last one; DP-SGD's steps) adds noise to."""
        return self._main.statistic

    @property
    def sensitivity(self) -> float:
        """Δ of the main release (DP-SGD: the clipping norm C)."""
        return self._main.sensitivity

    @property
    def noise_multiplier(self) -> float:
        """σ/Δ of the main release."""
        return self._main.noise_multiplier

    @property
    def noise_std(self) -> float:
        """σ of the main release."""
        return self._main.noise_std

    @property
    def is_dpsgd(self) -> bool:
        """Whether the guarantee is of a DP-SGD fit (many subsampled noisy steps)."""
        return self._main.sampling_rate is not None

    @property
    def sampling_rate(self) -> float | None:
        """q of DP-SGD's steps (``None`` otherwise)."""
        return self._main.sampling_rate

    @property
    def steps(self) -> int | None:
        """T, DP-SGD's steps (``None`` otherwise)."""
        return self._main.count if self.is_dpsgd else None

    @property
    def epochs(self) -> int | None:
        """Passes over the users of DP-SGD's steps (``None`` otherwise)."""
        return self._main.epochs if self.is_dpsgd else None

    @property
    def clipping_norm(self) -> float | None:
        """C, the bound on each user's gradient of a DP-SGD step (``None`` otherwise)."""
        return self._main.sensitivity if self.is_dpsgd else None

    @property
    def expected_batch_size(self) -> float | None:
        """``q · n_users`` of DP-SGD's steps (``None`` otherwise)."""
        rate = self._main.sampling_rate
        return None if rate is None else rate * self.n_users

    @property
    def pld_epsilon(self) -> float | None:
        """ε of the composition by the PLD accountant."""
        return self.epsilons.get("pld")

    @property
    def rdp_epsilon(self) -> float | None:
        """ε of the composition by the RDP accountant."""
        return self.epsilons.get("rdp")

    @property
    def accountant_epsilon(self) -> float:
        """The cross-check: ε of the composition by an accountant that did not set the noise
        (the spec's when the noise was set analytically, else the other one)."""
        if self.calibration == ANALYTIC:
            return self.epsilons[self.accountant]
        return self.epsilons[other_accountant(self.calibration)]

    @property
    def is_private(self) -> bool:
        """Whether the noise was the calibrated one (not scaled by a test or an audit) and drawn
        from a secure, unrecorded seed (not a fixed ``noise_seed``)."""
        return self.noise_scale_for_testing == 1.0 and self.noise_seed is None

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what the artifact's header stores)."""
        return {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "unit": self.unit,
            "accountant": self.accountant,
            "calibration": self.calibration,
            "epsilons": dict(self.epsilons),
            "composition": [r.to_dict() for r in self.composition],
            "contribution_bound": self.contribution_bound,
            "selection": self.selection,
            "n_users": self.n_users,
            "released": self.released,
            "accounting": self.accounting,
            "noise_scale_for_testing": self.noise_scale_for_testing,
            "noise_seed": self.noise_seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyGuarantee:
        """Rebuild from :meth:`to_dict`.

        Guarantees saved before the composition was recorded (a flat record with
        ``noise_multiplier`` and ``releases`` fields) are refused.

        Raises:
            ValueError: Missing or unknown fields.
        """
        if isinstance(data, dict) and "composition" not in data and "noise_multiplier" in data:
            raise ValueError(
                "this privacy guarantee was saved by an older privrank (a flat record without "
                "its list of releases) and cannot be read; retrain the model"
            )
        try:
            fields = dict(data)
            fields["composition"] = tuple(Release.from_dict(r) for r in fields["composition"])
            fields["epsilons"] = {str(k): float(v) for k, v in fields["epsilons"].items()}
            return cls(**fields)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"malformed privacy guarantee {data!r}: {exc}") from exc

    # -- words ----------------------------------------------------------------------------------
    def describe(self) -> str:
        """The guarantee in plain words."""
        head = (
            f"user-level (ε={self.epsilon:g}, δ={self.delta:.3g})-differential privacy: adding "
            f"or removing one user's entire history changes the probability of any output by at "
            f"most a factor e^{self.epsilon:g} plus {self.delta:.3g}."
        )
        bound = (
            "no cap on interactions per user"
            if self.contribution_bound is None
            else f"at most {self.contribution_bound} interactions per user ({self.selection})"
        )
        main = self._main
        others = [r for r in self.composition if r is not main]
        if main.mechanism == "dp-fedavg" and main.population is not None:
            head = (
                f"user-level (ε={self.epsilon:g}, δ={self.delta:.3g})-differential privacy: "
                "replacing one user's entire history by another's (the number of users is "
                "public) changes the probability of any output by at most a factor "
                f"e^{self.epsilon:g} plus {self.delta:.3g}."
            )
            cohort = round((main.sampling_rate or 0.0) * main.population)
            text = (
                f"{head} Mechanism: DP-FedAvg with one device holding one user's history: "
                f"{main.count} released rounds, each on a fixed cohort of {cohort} of "
                f"{main.population} devices drawn without replacement, each device's update "
                f"clipped on the device, Gaussian noise with multiplier "
                f"{main.noise_multiplier:.4g} per round against the replace-one sensitivity "
                f"on {main.statistic}; {bound}. Released: {self.released}."
            )
        elif main.mechanism == "dp-fedavg":
            text = (
                f"{head} Mechanism: DP-FedAvg with one device holding one user's history: "
                f"{main.count} released rounds, each device sampled into a round with "
                f"probability {main.sampling_rate:.4g} (Poisson; expected cohort "
                f"{self.expected_batch_size:g} devices), each device's update clipped on the "
                f"device, Gaussian noise with multiplier {main.noise_multiplier:.4g} per round "
                f"on {main.statistic}; {bound}. Released: {self.released}."
            )
        elif main.mechanism == "distributed-discrete-gaussian":
            head = (
                f"user-level (ε={self.epsilon:g}, δ={self.delta:.3g})-differential privacy: "
                "replacing one user's entire contribution by zero (the user still taking part "
                "and adding its noise) changes the probability of any output by at most a "
                f"factor e^{self.epsilon:g} plus {self.delta:.3g}."
            )
            text = (
                f"{head} Mechanism: distributed discrete Gaussian under SecAgg+ with one device "
                f"holding one user's history: {main.count} released rounds, each device's "
                f"update clipped, rounded (L2 bound {main.sensitivity:.4g} grid units) and "
                "noised on the device before masking; amplification by sampling only where "
                "the accounting claims it (secret sampling); "
                f"{bound}. Released: {self.released}."
            )
            others = []  # the counts' release is stated in the accounting
        elif self.is_dpsgd:
            text = (
                f"{head} Mechanism: DP-SGD with one user as one example: {main.count} steps "
                f"({main.epochs} epochs), each user sampled into a step with probability "
                f"{main.sampling_rate:.4g} (Poisson; expected batch "
                f"{self.expected_batch_size:g} users), each user's gradient clipped to L2 norm "
                f"{main.sensitivity:g}, Gaussian noise with multiplier "
                f"{main.noise_multiplier:.4g} (sigma = {main.noise_std:.4g} on the summed "
                f"gradient) on {main.statistic}; {bound}. Released: {self.released}."
            )
        else:
            text = (
                f"{head} Mechanism: Gaussian noise (sigma = {main.noise_std:.4g}, noise "
                f"multiplier {main.noise_multiplier:.4g}) on {main.statistic}"
                + (f" ({main.count} releases)" if main.count > 1 else "")
                + f", L2 sensitivity {main.sensitivity:.4g} with {bound}."
            )
        for other in others:
            text += (
                f" Also released: {other.statistic} (Gaussian, L2 sensitivity "
                f"{other.sensitivity:.4g}, noise multiplier {other.noise_multiplier:.4g})."
            )
        text += f" Accounting: {self.accounting}"
        if self.noise_scale_for_testing != 1.0:
            text = (
                f"NOT PRIVATE: the noise was scaled by {self.noise_scale_for_testing:g} for "
                f"testing, so this claim does not hold: {text}"
            )
        elif self.noise_seed is not None:
            text = (
                f"NOT PRIVATE (fixed noise seed {self.noise_seed}): the noise can be reproduced "
                f"from the seed, so this claim does not hold: {text}"
            )
        return text


def compose_guarantee(
    composition: Sequence[Release],
    spec: PrivacySpec,
    *,
    mechanism: str,
    calibration: str,
    accounting: str,
    n_users: int,
    released: str | None = None,
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
    noise_scale: float | None = None,
) -> PrivacyGuarantee:
    """The guarantee of a fit that made ``composition`` under a resolved ``spec``.

    ε of the composition by every accountant is computed here (the cross-check), by the one
    composition service (:func:`~privrank.privacy.calibration.epsilons`).
    """
    delta = float(spec.require_delta())
    return PrivacyGuarantee(
        mechanism=mechanism,
        epsilon=float(spec.epsilon),
        delta=delta,
        composition=tuple(composition),
        accountant=spec.accountant,
        calibration=calibration,
        epsilons=epsilons(composition, delta, pld_discretization),
        accounting=accounting,
        contribution_bound=spec.max_interactions_per_user,
        selection=spec.selection,
        n_users=int(n_users),
        released=released,
        noise_scale_for_testing=current_noise_scale() if noise_scale is None else noise_scale,
        noise_seed=spec.noise_seed,
    )
