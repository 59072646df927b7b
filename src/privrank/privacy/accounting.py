"""Privacy accounting on Google's ``dp_accounting``: ε of mechanisms, composition, calibration.

Conventions, used by every function here:

- **Unit of privacy: one user.** Neighbouring datasets differ by adding or removing one user's
  entire history (``dp_accounting``'s ``ADD_OR_REMOVE_ONE`` relation, where the "one" record is
  a user). Mechanisms make this true by bounding each user's contribution first (a cap on rows
  per user, per-user clipping), so that one user moves a released statistic by at most its L2
  sensitivity Δ.
- **Noise multiplier** ``m = σ / Δ``: the Gaussian noise's standard deviation over the L2
  sensitivity.
- **Gaussian mechanism** ``M(D) = f(D) + N(0, σ² I)`` with ``‖f(D) - f(D')‖₂ ≤ Δ`` is
  (ε, δ)-DP exactly when (Balle & Wang 2018, "Improving the Gaussian mechanism", Thm. 8)
  ``δ ≥ Φ(Δ/(2σ) - εσ/Δ) - e^ε Φ(-Δ/(2σ) - εσ/Δ)``. :func:`gaussian_epsilon` returns the
  smallest such ε. k releases with the same multiplier compose *exactly* to one Gaussian
  mechanism with multiplier ``m / √k`` (Dong, Roth & Su 2019, Gaussian DP).
- **DP-SGD** with Poisson sampling: each step includes each user independently with probability
  q, clips each user's gradient to norm C and adds ``N(0, (m C)² I)`` to the sum. T steps are
  accounted with the privacy loss distribution of the Poisson-subsampled Gaussian (PLD,
  Koskela et al. 2020; Doroshenko et al. 2022, pessimistic discretisation, so the ε is an upper
  bound), or with Rényi DP (Mironov, Talwar & Zhang 2019) as a looser cross-check.
- **Composition** of several mechanisms or runs on the same dataset: an :class:`Accountant`
  composes their events (adaptive composition is covered; PLD composition is tight, RDP is an
  upper bound). The budget ledger uses *basic* composition instead (ε and δ add up), which is
  sound for any mix of (ε, δ)-DP runs.
- **Fixed-size cohorts** (:func:`fixed_cohort_event`, federated rounds of exactly K of N
  devices drawn without replacement) are the exception to the add/remove relation:
  dp_accounting accounts sampling without replacement only under **replace-one** adjacency (N
  public; one user's entire history replaced by another's), and only by RDP (Wang, Balle &
  Kasiviswanathan 2019, Thm. 27); its PLD accountant has no such event. An accountant made with
  ``neighboring="replace_one"`` composes such events; every event composed with them must then
  state its multiplier against the replace-one sensitivity (twice the clipping norm of a sum of
  clipped vectors).

Calibration (``calibrate_*``) searches the smallest noise meeting a target ε at a given δ by
bisection on a log scale over the accountant's own ε, and returns the *upper* end of the final
bracket: the returned noise m satisfies ``ε(m) ≤ target`` as computed by the accountant, and
``m ≤ (1 + rtol) · m*`` where m* is the smallest multiplier that meets the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from privrank.errors import ConfigError
from privrank.privacy.spec import AccountantKind

# dp_accounting (and the scipy.stats / scipy.signal it imports, ~1 s and ~60 MB) is imported
# by the functions that use it, not with this module: a federated device imports the mechanism
# layer to add its noise share and never accounts anything.
if TYPE_CHECKING:
    import dp_accounting as dpa

__all__ = [
    "Accountant",
    "calibrate_dpsgd_noise",
    "calibrate_gaussian_noise",
    "calibrate_noise",
    "discrete_pair_epsilon",
    "dpsgd_epsilon",
    "dpsgd_event",
    "event_from_dict",
    "event_to_dict",
    "fixed_cohort_event",
    "gaussian_epsilon",
    "gaussian_event",
    "randomized_response_epsilon",
]

#: Default relative tolerance of the calibrated noise multiplier.
DEFAULT_RTOL = 1e-3
#: Default PLD discretisation of privacy-loss values (dp_accounting's default).
DEFAULT_PLD_DISCRETIZATION = 1e-4
_GAUSSIAN_TOL = 1e-12
_MAX_MULTIPLIER = 1e6
_MIN_MULTIPLIER = 1e-4


def _positive(name: str, value: float, *, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"The {name!r} parameter of {owner} must be a number > 0. Got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"The {name!r} parameter of {owner} must be finite. Got {value!r}")
    return float(value)


def _delta(value: float, *, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError(f"The 'delta' parameter of {owner} must be in (0, 1). Got {value!r}")
    return float(value)


def _count(name: str, value: int, *, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be an integer ≥ 1. Got {value!r}"
        )
    return value


def _rate(value: float, *, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(
            f"The 'sampling_rate' parameter of {owner} must be in (0, 1]. Got {value!r}"
        )
    return float(value)


def _kind(kind: str, *, owner: str) -> AccountantKind:
    if kind not in ("pld", "rdp"):
        raise ConfigError(
            f"The 'accountant' parameter of {owner} must be 'pld' or 'rdp'. Got {kind!r}"
        )
    return kind  # type: ignore[return-value]


#: The neighbouring relations an :class:`Accountant` can be stated against (``dp_accounting``'s
#: ``NeighboringRelation`` member of each).
_NEIGHBORING = {"add_or_remove": "ADD_OR_REMOVE_ONE", "replace_one": "REPLACE_ONE"}

# --- events -----------------------------------------------------------------------------------


def gaussian_event(noise_multiplier: float, count: int = 1) -> dpa.DpEvent:
    """The event of ``count`` Gaussian releases, each with multiplier ``σ/Δ``.

    Args:
        noise_multiplier: ``σ / Δ`` (> 0).
        count: How many releases (≥ 1), e.g. several noisy statistics of one fit.
    """
    import dp_accounting as dpa

    owner = "gaussian_event"
    event = dpa.GaussianDpEvent(_positive("noise_multiplier", noise_multiplier, owner=owner))
    count = _count("count", count, owner=owner)
    return event if count == 1 else dpa.SelfComposedDpEvent(event, count)


def dpsgd_event(sampling_rate: float, noise_multiplier: float, steps: int) -> dpa.DpEvent:
    """The event of T DP-SGD steps with Poisson sampling.

    Args:
        sampling_rate: q, the probability that a user is in a step's batch (0 < q ≤ 1).
        noise_multiplier: σ / C, noise std over the per-user clipping norm (> 0).
        steps: T (≥ 1).
    """
    import dp_accounting as dpa

    owner = "dpsgd_event"
    step = dpa.PoissonSampledDpEvent(
        _rate(sampling_rate, owner=owner),
        dpa.GaussianDpEvent(_positive("noise_multiplier", noise_multiplier, owner=owner)),
    )
    return dpa.SelfComposedDpEvent(step, _count("steps", steps, owner=owner))


def fixed_cohort_event(
    population: int, cohort: int, noise_multiplier: float, rounds: int
) -> dpa.DpEvent:
    """The event of T Gaussian rounds, each on a cohort of exactly K of N users drawn uniformly
    without replacement (replace-one adjacency: an accountant with
    ``neighboring="replace_one"``, RDP only).

    Args:
        population: N (≥ 1, public).
        cohort: K (1 ≤ K ≤ N).
        noise_multiplier: σ / Δ with Δ the *replace-one* L2 sensitivity of a round's statistic
            (2C for a sum of vectors clipped to C).
        rounds: T (≥ 1).
    """
    import dp_accounting as dpa

    owner = "fixed_cohort_event"
    population = _count("population", population, owner=owner)
    cohort = _count("cohort", cohort, owner=owner)
    if cohort > population:
        raise ConfigError(f"{owner}: the cohort ({cohort}) exceeds the population ({population})")
    step = dpa.SampledWithoutReplacementDpEvent(
        population,
        cohort,
        dpa.GaussianDpEvent(_positive("noise_multiplier", noise_multiplier, owner=owner)),
    )
    return dpa.SelfComposedDpEvent(step, _count("rounds", rounds, owner=owner))


def event_to_dict(event: dpa.DpEvent) -> dict[str, Any]:
    """A JSON-able form of a ``dp_accounting`` event: ``{"type": class name, **fields}``."""
    import dp_accounting as dpa

    if not isinstance(event, dpa.DpEvent) or type(event).__module__ != dpa.dp_event.__name__:
        raise ConfigError(f"not a dp_accounting event: {event!r}")
    out: dict[str, Any] = {"type": type(event).__name__}
    for field in type(event).__attrs_attrs__:  # dp_accounting events are attrs classes
        out[field.name] = _field_to_json(getattr(event, field.name))
    return out


def _field_to_json(value: Any) -> Any:
    import dp_accounting as dpa

    if isinstance(value, dpa.DpEvent):
        return event_to_dict(value)
    if isinstance(value, list | tuple):
        return [_field_to_json(item) for item in value]
    return value


def event_from_dict(data: dict[str, Any]) -> dpa.DpEvent:
    """Rebuild an event from :func:`event_to_dict` (only classes of ``dp_accounting.dp_event``).

    Raises:
        ConfigError: Unknown event class or malformed fields.
    """
    import dp_accounting as dpa

    try:
        fields = dict(data)
        name = fields.pop("type")
        cls = getattr(dpa.dp_event, name, None)
        if not (isinstance(cls, type) and issubclass(cls, dpa.DpEvent)):
            raise ConfigError(f"unknown dp_accounting event class {name!r}")
        return cls(**{key: _field_from_json(value) for key, value in fields.items()})
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"malformed privacy event {data!r}: {exc}") from exc


def _field_from_json(value: Any) -> Any:
    if isinstance(value, dict) and "type" in value:
        return event_from_dict(value)
    if isinstance(value, list):
        return [_field_from_json(item) for item in value]
    return value


# --- the accountant ---------------------------------------------------------------------------


class Accountant:
    """Composes privacy events and reports (ε, δ), in the spirit of Opacus's accountants.

    The guarantee is user-level: every event must describe a mechanism whose sensitivity is to
    adding or removing one user's entire history. ``compose`` is adaptive composition: later
    events may be chosen after seeing earlier outputs.

    - ``pld``: privacy loss distributions with pessimistic discretisation of width
      ``pld_discretization``; the reported ε is an upper bound that tends to the exact value as
      the width shrinks.
    - ``rdp``: Rényi DP at ``rdp_orders`` (dp_accounting's default grid), converted to (ε, δ)
      with the bound of Canonne, Kamath & Steinke 2020; an upper bound, usually looser than PLD.

    Example:
        >>> acc = Accountant("pld").compose(dpsgd_event(0.01, 1.0, 1000))
        >>> eps = acc.epsilon(1e-5)

    Args:
        kind: ``pld`` or ``rdp``.
        pld_discretization: PLD value discretisation interval (> 0).
        rdp_orders: Rényi orders for ``rdp`` (``None``: dp_accounting's default).
        neighboring: ``add_or_remove`` (the default: one user added or removed) or
            ``replace_one`` (one user's history replaced by another's; the population size is
            public): the relation every composed event's multiplier is stated against.
    """

    def __init__(
        self,
        kind: AccountantKind = "pld",
        *,
        pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
        rdp_orders: list[float] | None = None,
        neighboring: str = "add_or_remove",
    ) -> None:
        self.kind = _kind(kind, owner="Accountant")
        if neighboring not in _NEIGHBORING:
            raise ConfigError(
                f"Accountant: neighboring must be add_or_remove or replace_one. Got {neighboring!r}"
            )
        self.neighboring = neighboring
        self.pld_discretization = _positive(
            "pld_discretization", pld_discretization, owner="Accountant"
        )
        self.rdp_orders = None if rdp_orders is None else [float(o) for o in rdp_orders]
        if self.rdp_orders is not None and (
            not self.rdp_orders or any(not o > 1 for o in self.rdp_orders)
        ):
            raise ConfigError(f"Accountant: rdp_orders must be orders > 1. Got {rdp_orders!r}")
        self._events: list[dpa.DpEvent] = []
        self._inner = self._fresh()

    def _fresh(self) -> dpa.PrivacyAccountant:
        import dp_accounting as dpa

        relation = getattr(dpa.NeighboringRelation, _NEIGHBORING[self.neighboring])
        if self.kind == "pld":
            return dpa.pld.PLDAccountant(
                neighboring_relation=relation,
                value_discretization_interval=self.pld_discretization,
            )
        return dpa.rdp.RdpAccountant(orders=self.rdp_orders, neighboring_relation=relation)

    @property
    def events(self) -> tuple[dpa.DpEvent, ...]:
        """The events composed so far, in order."""
        return tuple(self._events)

    def compose(self, event: dpa.DpEvent, count: int = 1) -> Accountant:
        """Add ``count`` repetitions of ``event``; returns ``self`` for chaining.

        Raises:
            ConfigError: The event is not a ``dp_accounting`` event this accountant supports.
        """
        import dp_accounting as dpa

        count = _count("count", count, owner="Accountant.compose")
        if not isinstance(event, dpa.DpEvent):
            raise ConfigError(f"Accountant.compose needs a dp_accounting DpEvent. Got {event!r}")
        if not self._inner.supports(event):
            raise ConfigError(f"the {self.kind.upper()} accountant does not support {event!r}")
        event = event if count == 1 else dpa.SelfComposedDpEvent(event, count)
        self._inner.compose(event)
        self._events.append(event)
        return self

    def epsilon(self, delta: float) -> float:
        """The smallest ε (as this accountant bounds it) such that the composition is (ε, δ)-DP.

        Returns ``0.0`` when nothing was composed and ``inf`` when a non-private event was.
        """
        return float(self._inner.get_epsilon(_delta(delta, owner="Accountant.epsilon")))

    def delta(self, epsilon: float) -> float:
        """The smallest δ such that the composition is (ε, δ)-DP."""
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or epsilon < 0:
            raise ConfigError(f"Accountant.delta: epsilon must be ≥ 0. Got {epsilon!r}")
        return float(self._inner.get_delta(float(epsilon)))

    def state_dict(self) -> dict[str, Any]:
        """A JSON-able description (kind, settings and the events) that rebuilds it exactly."""
        return {
            "kind": self.kind,
            "pld_discretization": self.pld_discretization,
            "rdp_orders": self.rdp_orders,
            "neighboring": self.neighboring,
            "events": [event_to_dict(event) for event in self._events],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Accountant:
        """Rebuild an accountant from :meth:`state_dict` (its events are composed again)."""
        try:
            accountant = cls(
                state["kind"],
                pld_discretization=state["pld_discretization"],
                rdp_orders=state["rdp_orders"],
                neighboring=state.get("neighboring", "add_or_remove"),
            )
            events = state["events"]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"malformed accountant state: {exc}") from exc
        for event in events:
            accountant.compose(event_from_dict(event))
        return accountant

    def __repr__(self) -> str:
        return f"Accountant({self.kind!r}, events={len(self._events)})"


# --- ε of common mechanisms -------------------------------------------------------------------


def gaussian_epsilon(
    noise_multiplier: float,
    delta: float,
    *,
    count: int = 1,
) -> float:
    """Exact ε of the Gaussian mechanism (Balle & Wang 2018), composed ``count`` times.

    The value is the root of the formula below, rounded up by the root finder's tolerance
    (1e-12), so it is never below the exact ε.

    With ``m = σ/Δ``, one release is (ε, δ)-DP for the smallest ε with
    ``Φ(1/(2m) - εm) - e^ε Φ(-1/(2m) - εm) ≤ δ``; ``count`` releases compose exactly to one with
    multiplier ``m / √count``.

    Args:
        noise_multiplier: σ / Δ, with Δ the L2 sensitivity to one user's history (> 0).
        delta: Target δ in (0, 1).
        count: Number of releases composed (≥ 1).
    """
    import dp_accounting as dpa

    owner = "gaussian_epsilon"
    multiplier = _positive("noise_multiplier", noise_multiplier, owner=owner)
    count = _count("count", count, owner=owner)
    eps = dpa.get_epsilon_gaussian(
        multiplier / math.sqrt(count), _delta(delta, owner=owner), tol=_GAUSSIAN_TOL
    )
    # The root finder is within its tolerance of the exact ε; round up so ε is never below it.
    return float(eps) + _GAUSSIAN_TOL if eps > 0 else 0.0


def dpsgd_epsilon(
    sampling_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    *,
    accountant: AccountantKind = "pld",
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
) -> float:
    """ε of T steps of user-level DP-SGD with Poisson sampling at rate q and multiplier σ/C.

    Args:
        sampling_rate: q (0 < q ≤ 1).
        noise_multiplier: σ / C (> 0).
        steps: T (≥ 1).
        delta: Target δ in (0, 1).
        accountant: ``pld`` (tight) or ``rdp`` (upper bound).
        pld_discretization: PLD discretisation interval.
    """
    event = dpsgd_event(sampling_rate, noise_multiplier, steps)
    return (
        Accountant(_kind(accountant, owner="dpsgd_epsilon"), pld_discretization=pld_discretization)
        .compose(event)
        .epsilon(delta)
    )


# --- calibration ------------------------------------------------------------------------------


def calibrate_noise(
    epsilon_of: Callable[[float], float],
    target_epsilon: float,
    *,
    rtol: float = DEFAULT_RTOL,
    initial: float = 1.0,
    step: float = 2.0,
) -> float:
    """The smallest noise multiplier m with ``epsilon_of(m) ≤ target_epsilon``, within ``rtol``.

    ``epsilon_of`` must be non-increasing in m (true for every mechanism here). The search
    brackets the answer by multiplying/dividing ``initial`` by ``step``, then bisects
    ``[lo, hi]`` on a log scale until ``hi / lo ≤ 1 + rtol``, keeping
    ``epsilon_of(lo) > target ≥ epsilon_of(hi)``. It returns ``hi``: a multiplier whose ε meets
    the target, at most ``(1 + rtol)`` times the optimum. (When even a multiplier below 1e-4
    meets the target, the smallest multiplier tried is returned: it meets the target too.)

    Args:
        epsilon_of: ε as a function of the noise multiplier.
        target_epsilon: Target ε (> 0).
        rtol: Relative tolerance on the multiplier (> 0).
        initial: Starting guess (> 0).
        step: Bracketing factor (> 1); a good ``initial`` with a small step saves evaluations.

    Raises:
        ConfigError: The target cannot be met with a multiplier ≤ 1e6, or invalid arguments.
    """
    owner = "calibrate_noise"
    target = _positive("target_epsilon", target_epsilon, owner=owner)
    rtol = _positive("rtol", rtol, owner=owner)
    hi = _positive("initial", initial, owner=owner)
    step = _positive("step", step, owner=owner)
    if step <= 1.0:
        raise ConfigError(f"The 'step' parameter of {owner} must be > 1. Got {step!r}")
    while epsilon_of(hi) > target:
        hi *= step
        if hi > _MAX_MULTIPLIER:
            raise ConfigError(
                f"{owner}: ε = {target:g} cannot be reached with a noise multiplier ≤ "
                f"{_MAX_MULTIPLIER:g}"
            )
    lo = hi / step
    while epsilon_of(lo) <= target:
        hi, lo = lo, lo / step
        if lo < _MIN_MULTIPLIER:
            return hi
    while hi / lo > 1.0 + rtol:
        mid = math.sqrt(lo * hi)
        if epsilon_of(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_gaussian_noise(
    target_epsilon: float,
    delta: float,
    *,
    count: int = 1,
    rtol: float = 1e-9,
) -> float:
    """The noise multiplier σ/Δ of ``count`` Gaussian releases meeting (target ε, δ) exactly.

    Uses the exact analytic ε (:func:`gaussian_epsilon`); multiply by the L2 sensitivity Δ to
    get σ. The result meets the target and is within ``rtol`` (relative) of the optimum.
    """
    owner = "calibrate_gaussian_noise"
    _positive("target_epsilon", target_epsilon, owner=owner)
    delta = _delta(delta, owner=owner)
    count = _count("count", count, owner=owner)
    return calibrate_noise(
        lambda m: gaussian_epsilon(m, delta, count=count), target_epsilon, rtol=rtol
    )


def calibrate_dpsgd_noise(
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    *,
    accountant: AccountantKind = "pld",
    rtol: float = DEFAULT_RTOL,
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION,
) -> float:
    """The DP-SGD noise multiplier σ/C meeting (target ε, δ) for T steps at sampling rate q.

    The returned multiplier's ε, computed by the same accountant, is ≤ the target and the
    multiplier is at most ``(1 + rtol)`` times the smallest one that meets it.

    With PLD, the search first runs on a 10× coarser discretisation (fast), then refines around
    that answer with the requested one; only the final, requested accountant decides the
    result, so the guarantee above holds for it.
    """
    owner = "calibrate_dpsgd_noise"
    _positive("target_epsilon", target_epsilon, owner=owner)
    delta = _delta(delta, owner=owner)
    rate = _rate(sampling_rate, owner=owner)
    steps = _count("steps", steps, owner=owner)
    kind = _kind(accountant, owner=owner)
    rtol = _positive("rtol", rtol, owner=owner)
    fine = _positive("pld_discretization", pld_discretization, owner=owner)

    def epsilon_at(discretization: float) -> Callable[[float], float]:
        return lambda m: dpsgd_epsilon(
            rate, m, steps, delta, accountant=kind, pld_discretization=discretization
        )

    initial, step = 1.0, 2.0
    if kind == "pld":
        initial = calibrate_noise(epsilon_at(10 * fine), target_epsilon, rtol=rtol)
        step = 1.0 + 2 * rtol
    return calibrate_noise(epsilon_at(fine), target_epsilon, rtol=rtol, initial=initial, step=step)


def randomized_response_epsilon(epsilon_per_bit: float, bits: int, delta: float = 0.0) -> float:
    """ε at δ of ``bits`` binary randomised responses, each ``epsilon_per_bit``-DP, composed.

    This is local DP: the neighbouring relation is *replace one* (a device's input changes
    from one value to another), dp_accounting's ``REPLACE_ONE``. Each response keeps its bit
    with probability ``e^ε/(1 + e^ε)`` (dp_accounting's ``RandomizedResponseDpEvent`` with
    ``noise_parameter = 2/(1 + e^ε)`` and two buckets); the PLD of one response is built by
    ``privacy_loss_distribution.from_randomized_response`` and self-composed ``bits`` times,
    without tail truncation (a truncated tail reads as an infinite loss at δ = 0). At δ = 0 the
    answer is ``bits · ε`` (pure DP composes additively, tight for randomised response), up to
    the PLD's float rounding of the tail's mass for thousands of responses.
    The PLD is composed directly because dp_accounting 0.6.0's ``PLDAccountant`` drops the
    count of a ``SelfComposedDpEvent`` of randomised response (it reports one response's ε).

    Raises:
        ConfigError: ε not finite and > 0, ``bits`` < 1, or δ outside [0, 1).
    """
    from dp_accounting.pld import privacy_loss_distribution

    owner = "randomized_response_epsilon"
    epsilon = _positive("epsilon_per_bit", epsilon_per_bit, owner=owner)
    bits = _count("bits", bits, owner=owner)
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 <= delta < 1:
        raise ConfigError(f"{owner}: delta must be in [0, 1). Got {delta!r}")
    pld = privacy_loss_distribution.from_randomized_response(
        noise_parameter=2.0 / (1.0 + math.exp(epsilon)),
        num_buckets=2,
        value_discretization_interval=DEFAULT_PLD_DISCRETIZATION,
    )
    composed = pld.self_compose(bits, tail_mass_truncation=0.0)
    return float(composed.get_epsilon_for_delta(float(delta)))


def discrete_pair_epsilon(
    pmf_upper: dict[int, float], pmf_lower: dict[int, float], compositions: int
) -> float:
    """ε at δ = 0 of ``compositions`` self-composed releases with output laws ``pmf_upper`` and
    ``pmf_lower`` (the output distributions under two neighbouring inputs, both directions).

    Local DP with an asymmetric randomiser (the optimised unary encoding of the ``ocms``
    sketch): dp_accounting's ``from_two_probability_mass_functions`` builds the privacy loss
    distribution of each direction, self-composed without tail truncation; the larger ε of the
    two directions is returned. At δ = 0 it is ``compositions ·`` the worst log-likelihood
    ratio, up to the PLD's discretisation.

    Raises:
        ConfigError: ``compositions`` < 1, or pmfs that do not sum to 1 or put mass on an
            output the other cannot produce (infinite loss).
    """
    from dp_accounting.pld import privacy_loss_distribution

    owner = "discrete_pair_epsilon"
    compositions = _count("compositions", compositions, owner=owner)
    for pmf in (pmf_upper, pmf_lower):
        if not math.isclose(sum(pmf.values()), 1.0, rel_tol=1e-9):
            raise ConfigError(f"{owner}: a pmf sums to {sum(pmf.values())}, not 1")
    if set(pmf_upper) != set(pmf_lower) or min(*pmf_upper.values(), *pmf_lower.values()) <= 0:
        raise ConfigError(f"{owner}: the two laws must share their support (finite loss)")
    worst = 0.0
    for a, b in ((pmf_upper, pmf_lower), (pmf_lower, pmf_upper)):
        pld = privacy_loss_distribution.from_two_probability_mass_functions(
            {o: math.log(v) for o, v in b.items()},  # lower
            {o: math.log(v) for o, v in a.items()},  # upper
            value_discretization_interval=DEFAULT_PLD_DISCRETIZATION,
            symmetric=False,
        )
        composed = pld.self_compose(compositions, tail_mass_truncation=0.0)
        worst = max(worst, float(composed.get_epsilon_for_delta(0.0)))
    return worst
