"""The one calibration and composition service: releases in, (ε, δ) or a noise multiplier out.

Every private fit is a list of :class:`Release` objects: a Gaussian release (or ``count`` of
them) of a statistic with L2 sensitivity Δ to one user's entire history and noise multiplier
``m = σ/Δ``, optionally Poisson-subsampled at rate q (a DP-SGD step). This module is the only
place that turns such a list into privacy numbers:

- :func:`composed_epsilon`: ε of the adaptive composition of the releases at δ, by a named
  accountant from :data:`ACCOUNTANTS` (``pld``: tight; ``rdp``: an upper bound), both on
  Google's ``dp_accounting`` (:class:`~privrank.privacy.accounting.Accountant`).
- :func:`epsilons`: ε of the same composition by every registered accountant (PLD is the
  answer, RDP the cross-check).
- :func:`calibrate_multiplier`: the smallest multiplier of one release in a composition such
  that the whole composition meets a target (ε, δ) by a named accountant (bisection on a log
  scale, :func:`~privrank.privacy.accounting.calibrate_noise`; the result meets the target as
  that accountant computes it).
- :func:`gaussian_multiplier`: the exact multiplier of ``count`` plain Gaussian releases by the
  analytic Gaussian mechanism (Balle & Wang 2018), with no accountant's discretisation.

Results are cached: a calibration is a pure function of its (hashable) arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privrank.errors import ConfigError
from privrank.privacy.accounting import (
    DEFAULT_PLD_DISCRETIZATION,
    DEFAULT_RTOL,
    Accountant,
    calibrate_gaussian_noise,
    calibrate_noise,
    dpsgd_event,
    fixed_cohort_event,
    gaussian_event,
)
from privrank.privacy.spec import AccountantKind

if TYPE_CHECKING:
    import dp_accounting as dpa

__all__ = [
    "ACCOUNTANTS",
    "ANALYTIC",
    "PLD_DISCRETIZATION",
    "POPULARITY_SHARE",
    "Release",
    "accountant",
    "calibrate_multiplier",
    "composed_epsilon",
    "epsilons",
    "gaussian_multiplier",
    "other_accountant",
    "replace_one",
    "supports",
]

#: Share of ε whose Gaussian multiplier the cold-start item counts get (before composition).
POPULARITY_SHARE = 0.1
#: PLD discretisation of DP-SGD and DP-FedAvg calibration. Pessimistic, so the ε it gives is an
#: upper bound at any width; 10× dp_accounting's default keeps a calibration to a few seconds.
PLD_DISCRETIZATION = 10 * DEFAULT_PLD_DISCRETIZATION

#: The accountants found by name (Opacus's registry, on ``dp_accounting``): a new accountant is
#: added here and nowhere else.
ACCOUNTANTS: dict[str, Callable[[float], Accountant]] = {
    "pld": lambda discretization: Accountant("pld", pld_discretization=discretization),
    "rdp": lambda discretization: Accountant("rdp", pld_discretization=discretization),
}
#: The name under which a noise multiplier set by the exact analytic Gaussian condition (no
#: accountant) is recorded.
ANALYTIC = "analytic-gaussian"


def accountant(name: str, pld_discretization: float = DEFAULT_PLD_DISCRETIZATION) -> Accountant:
    """A fresh accountant of the registered ``name`` (``pld`` or ``rdp``).

    Raises:
        ConfigError: No accountant of that name.
    """
    factory = ACCOUNTANTS.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown accountant {name!r}; the registered accountants are: "
            + ", ".join(sorted(ACCOUNTANTS))
        )
    return factory(pld_discretization)


def other_accountant(name: str) -> str:
    """The accountant that cross-checks ``name`` (``rdp`` for ``pld`` and vice versa)."""
    return "rdp" if name == "pld" else "pld"


@dataclass(frozen=True)
class Release:
    """One Gaussian release of a statistic (or ``count`` identical ones) in a composition.

    The release adds ``N(0, σ² I)`` with ``σ = noise_multiplier · sensitivity`` to a statistic
    one user's entire history moves by at most ``sensitivity`` in L2 norm. With a
    ``sampling_rate`` it is a Poisson-subsampled Gaussian (one DP-SGD step: every user is in
    the step with probability q), and ``count`` is the number of steps.

    Attributes:
        mechanism: Registry name of the mechanism that made it (``gaussian``, ``dp-als``,
            ``dp-sgd``, see :mod:`privrank.privacy.mechanism`).
        statistic: What was released, in words.
        sensitivity: Δ, the L2 sensitivity to one user (for DP-SGD: the clipping norm C).
        noise_multiplier: ``m = σ / Δ``.
        count: How many such releases (ALS iterations, DP-SGD steps) are composed (≥ 1).
        sampling_rate: q of Poisson subsampling, or ``None`` (no subsampling).
        epochs: Passes over the users the ``count`` releases make, when that is meaningful.
        population: With ``sampling_rate``: not Poisson but a fixed cohort of exactly
            ``round(q · population)`` of ``population`` users drawn without replacement
            (:func:`~privrank.privacy.accounting.fixed_cohort_event`). A composition holding
            one is accounted under **replace-one** adjacency, by RDP only (dp_accounting has
            no PLD for it): every release of it must state ``sensitivity`` and
            ``noise_multiplier`` against replace-one.
    """

    mechanism: str
    statistic: str
    sensitivity: float
    noise_multiplier: float
    count: int = 1
    sampling_rate: float | None = None
    epochs: int | None = None
    population: int | None = None

    @property
    def noise_std(self) -> float:
        """σ = m · Δ, the standard deviation of the noise on every released coordinate."""
        return self.noise_multiplier * self.sensitivity

    def event(self) -> dpa.DpEvent:
        """The ``dp_accounting`` event of this release (all ``count`` of it)."""
        return _event(self.noise_multiplier, self.count, self.sampling_rate, self.population)

    def with_multiplier(self, noise_multiplier: float) -> Release:
        """The same release with another noise multiplier."""
        return dataclasses.replace(self, noise_multiplier=float(noise_multiplier))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        """Rebuild from :meth:`to_dict`.

        Raises:
            ValueError: Missing or unknown fields.
        """
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"malformed release {data!r}: {exc}") from exc


@contextlib.contextmanager
def _quiet_rdp() -> Iterator[None]:
    """Silence dp_accounting's RDP warnings about Rényi orders it drops (the bound still
    holds: it is the minimum over the orders kept)."""
    from absl import logging as absl_logging

    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(previous)


def composed_epsilon(
    releases: Sequence[Release],
    delta: float,
    accountant_name: str = "pld",
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
) -> float:
    """ε at δ of the adaptive composition of ``releases``, in order, by a named accountant.

    Args:
        releases: The releases.
        delta: Target δ in (0, 1).
        accountant_name: A name of :data:`ACCOUNTANTS`.
        pld_discretization: The PLD value-discretisation interval (pessimistic: ε is an upper
            bound at any width).
    """
    key = tuple((r.noise_multiplier, r.count, r.sampling_rate, r.population) for r in releases)
    return _composed(key, float(delta), str(accountant_name), float(pld_discretization))


def _event(
    multiplier: float, count: int, rate: float | None, population: int | None
) -> dpa.DpEvent:
    if rate is None:
        return gaussian_event(multiplier, count)
    if population is None:
        return dpsgd_event(rate, multiplier, count)
    return fixed_cohort_event(population, round(rate * population), multiplier, count)


def replace_one(releases: Sequence[Release]) -> bool:
    """Whether the composition is accounted under replace-one adjacency (it holds a
    fixed-cohort release)."""
    return any(r.population is not None for r in releases)


def supports(releases: Sequence[Release], accountant_name: str) -> bool:
    """Whether the named accountant accounts the composition (PLD has no fixed cohorts)."""
    return not (replace_one(releases) and accountant_name == "pld")


@functools.lru_cache(maxsize=1024)
def _composed(
    key: tuple[tuple[float, int, float | None, int | None], ...],
    delta: float,
    accountant_name: str,
    pld_discretization: float,
) -> float:
    book = accountant(accountant_name, pld_discretization)
    if any(population is not None for *_, population in key):
        if accountant_name != "rdp":
            raise ConfigError(
                "a fixed cohort (sampling without replacement) is accounted by RDP only: "
                "dp_accounting's PLD accountant has no such event; use the rdp accountant"
            )
        book = Accountant("rdp", neighboring="replace_one")
    with _quiet_rdp():
        for multiplier, count, rate, population in key:
            book.compose(_event(multiplier, count, rate, population))
        return book.epsilon(delta)


def epsilons(
    releases: Sequence[Release],
    delta: float,
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
) -> dict[str, float]:
    """ε of the composition by every registered accountant that accounts it, e.g. ``{"pld": …,
    "rdp": …}`` (``{"rdp": …}`` only for a fixed-cohort composition: :func:`supports`)."""
    return {
        name: float(composed_epsilon(releases, delta, name, pld_discretization))
        for name in ACCOUNTANTS
        if supports(releases, name)
    }


def calibrate_multiplier(
    target_epsilon: float,
    delta: float,
    releases: tuple[Release, ...],
    *,
    free: int = -1,
    accountant_name: AccountantKind = "pld",
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
    rtol: float = DEFAULT_RTOL,
    initial: float = 1.0,
    step: float = 2.0,
) -> float:
    """The smallest multiplier of ``releases[free]`` for which the composition meets the target.

    The other releases keep their multipliers (e.g. DP-SGD's cold-start counts, fixed first);
    ``releases[free]``'s is ignored and searched. The returned multiplier meets
    ``target_epsilon`` at ``delta`` by the named accountant and is at most ``1 + rtol`` times
    the smallest that does (:func:`~privrank.privacy.accounting.calibrate_noise`; ``initial``
    and ``step`` start its bracketing, e.g. from an analytic answer).

    Raises:
        ConfigError: Bad arguments, or a target no multiplier ≤ 1e6 meets.
    """
    if not releases or not -len(releases) <= free < len(releases):
        raise ConfigError(f"calibrate_multiplier: no release {free} among {len(releases)}")
    return _calibrated(
        float(target_epsilon),
        float(delta),
        tuple(releases),
        free % len(releases),
        str(accountant_name),
        float(pld_discretization),
        float(rtol),
        float(initial),
        float(step),
    )


@functools.lru_cache(maxsize=256)
def _calibrated(
    target: float,
    delta: float,
    releases: tuple[Release, ...],
    free: int,
    accountant_name: str,
    pld_discretization: float,
    rtol: float,
    initial: float,
    step: float,
) -> float:
    accountant(accountant_name, pld_discretization)  # an unknown name fails before the search

    def epsilon_of(multiplier: float) -> float:
        trial = list(releases)
        trial[free] = releases[free].with_multiplier(multiplier)
        return composed_epsilon(trial, delta, accountant_name, pld_discretization)

    return calibrate_noise(epsilon_of, target, rtol=rtol, initial=initial, step=step)


@functools.lru_cache(maxsize=256)
def gaussian_multiplier(epsilon: float, delta: float, count: int = 1) -> float:
    """The multiplier σ/Δ of ``count`` Gaussian releases meeting (ε, δ) exactly (analytic).

    ``count`` releases of multiplier m compose exactly to one of multiplier ``m/√count``; the
    multiplier is the smallest (within a relative 1e-9) for which that one release is (ε, δ)-DP
    by the exact condition of Balle & Wang (2018, Thm. 8).
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"gaussian_multiplier: ε must be finite and > 0. Got {epsilon!r}")
    return calibrate_gaussian_noise(float(epsilon), float(delta), count=int(count))
