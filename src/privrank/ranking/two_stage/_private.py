r"""The budget of a private two-stage fit: how (ε, δ) is split, and what is composed.

A private two-stage fit (:meth:`~privrank.ranking.two_stage.TwoStage.fit` with a privacy spec)
is a sequence of user-level releases, each a registered privrank mechanism run on the
contribution-bounded training data:

1. each distinct retriever fitted privately on the *fit part* (its own mechanism: noisy
   Gram statistics for EASE and ItemKNN, DP-ALS for iALS, noisy counts for most-popular, DP-SGD
   for SASRec and Mult-VAE), each at :math:`(\varepsilon_r, \delta_r)`;
2. the listwise ranker's DP-SGD over one query group per user (the group's features are
   functions of the step-1 releases and of that user's own rows), at
   :math:`(\varepsilon_\text{rank}, \delta_\text{rank})`;
3. with ``refit``, each distinct retriever fitted privately again on the whole training data,
   each at :math:`(\varepsilon_r, \delta_r)`.

With ``k`` retriever fits in all (distinct specs, times two with ``refit``) and ranker share
``ρ``: :math:`\varepsilon_\text{rank} = \rho\varepsilon`, :math:`\delta_\text{rank} =
\rho\delta`, :math:`\varepsilon_r = (1-\rho)\varepsilon / k`, :math:`\delta_r = (1-\rho)\delta /
k`. Every later step reads earlier releases only as fixed inputs, so by adaptive basic
composition the fit is :math:`(\sum \varepsilon_i, \sum \delta_i) = (\varepsilon, \delta)`-DP
for adding or removing one user's entire history. The same releases composed by the PLD
accountant (and RDP, the cross-check) give a tighter ε, recorded in the guarantee's
``epsilons``.

**The calibrated split** (``private.split = "calibrated"``, the default). Basic composition
wastes budget: on ML-100K at ε = 8 the PLD accountant composes the basic split's releases to
ε ≈ 4.9. So each part's ε is scaled by one factor :math:`s \ge 1` (:func:`calibrate_split`),
chosen before any data is read from *plans*: every part states the releases it makes at a
given (ε', δ_i) from the data's shape alone (users, items, the label users the ranker samples
from; :class:`~privrank.models.capabilities.PlannedPrivateFit` and
:meth:`~privrank.ranking.ltr.ListwiseRanker.planned_releases`). The PLD accountant
(dp_accounting, pessimistic discretisation: an upper bound) of all the planned releases is then
within ``tolerance`` below the requested ε, and the fit makes exactly the planned releases
(:func:`check_planned` refuses the fit otherwise), so the whole fit is user-level (ε, δ)-DP
under add/remove-one-user adjacency, by the PLD accountant; the trust model is every part's: a
trusted curator holding the raw data. The ledger is charged the requested (ε, δ) once, by the
workflow's fit-and-spend, as before. The counts the plans read (users, items, label users) are
treated as public, as the number of users is throughout privrank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from privrank.errors import ConfigError
from privrank.models.base import ModelFitError
from privrank.privacy.calibration import PLD_DISCRETIZATION, composed_epsilon
from privrank.privacy.mechanism import PrivacyGuarantee, Release, compose_guarantee
from privrank.privacy.spec import PrivacySpec

__all__ = [
    "BudgetSplit",
    "CalibratedSplit",
    "calibrate_budget",
    "calibrate_split",
    "check_planned",
    "compose_fit",
    "private_item_table",
    "split_budget",
]

#: Calibrated splits land within this share of ε below the request (a few bisection steps).
CALIBRATION_TOLERANCE = 0.005


@dataclass(frozen=True)
class BudgetSplit:
    """The specs of a private two-stage fit's releases.

    Attributes:
        retrievers: One spec per distinct retriever fit on the fit part.
        refit: One spec per distinct retriever refit on the whole data (empty without refit).
        ranker: The ranker's DP-SGD spec.
    """

    retrievers: tuple[PrivacySpec, ...]
    refit: tuple[PrivacySpec, ...]
    ranker: PrivacySpec


def _noise_seed(spec: PrivacySpec, index: int) -> int | None:
    """A distinct fixed noise seed per release when the spec fixes one (tests only), else
    ``None`` (every release draws fresh noise from the OS's secure source)."""
    if spec.noise_seed is None:
        return None
    words = np.random.SeedSequence([spec.noise_seed, index]).generate_state(4, dtype=np.uint32)
    return int.from_bytes(words.tobytes(), "little")


def split_budget(
    spec: PrivacySpec, n_retrievers: int, refit: bool, ranker_share: float
) -> BudgetSplit:
    """Split a resolved spec's (ε, δ) over the releases (see the module docstring).

    Args:
        spec: The fit's resolved spec (δ set).
        n_retrievers: Distinct retriever fits per fitting round (≥ 1).
        refit: Whether the retrievers are fitted a second time on the whole data.
        ranker_share: ρ, the ranker's share of ε and δ.
    """
    delta = spec.require_delta()
    k = n_retrievers * (2 if refit else 1)
    index = iter(range(k + 1))

    def part(epsilon: float, delta_part: float) -> PrivacySpec:
        return spec.model_copy(
            update={
                "epsilon": epsilon,
                "delta": delta_part,
                "noise_seed": _noise_seed(spec, next(index)),
            }
        )

    retriever_eps, retriever_delta = (
        (1 - ranker_share) * spec.epsilon / k,
        (1 - ranker_share) * delta / k,
    )
    fit = tuple(part(retriever_eps, retriever_delta) for _ in range(n_retrievers))
    ranker = part(ranker_share * spec.epsilon, ranker_share * delta)
    again = (
        tuple(part(retriever_eps, retriever_delta) for _ in range(n_retrievers)) if refit else ()
    )
    return BudgetSplit(retrievers=fit, refit=again, ranker=ranker)


def private_item_table(popularity: np.ndarray) -> np.ndarray:
    """``(n_items, 3)`` item features of a private fit, from a released popularity only.

    Column 0 is :math:`\\log(1 + \\max(\\tilde c_i, 0))` of the noisy counts ``popularity`` (a
    retriever's private cold-start popularity: post-processing of its release). The last-seen
    time and mean position would need releases of their own; they are the constants 0.5 (the
    value the non-private table gives an item without timestamps).
    """
    n_items = len(popularity)
    table = np.full((n_items, 3), 0.5, dtype=np.float32)
    table[:, 0] = np.log1p(np.maximum(np.asarray(popularity, dtype=np.float64), 0.0))
    return table


@dataclass(frozen=True)
class CalibratedSplit:
    """A budget split widened by :func:`calibrate_budget`.

    Attributes:
        budget: The parts' specs, each part's ε scaled by ``scale`` (δ unchanged).
        scale: ``s ≥ 1``.
        composed_epsilon: The PLD accountant's ε of the planned releases at δ (≤ the request).
        planned: The planned releases of every part, in release order.
    """

    budget: BudgetSplit
    scale: float
    composed_epsilon: float
    planned: tuple[Release, ...]


PartPlan = Callable[[PrivacySpec], Sequence[Release]]


def calibrate_budget(
    spec: PrivacySpec,
    basic: BudgetSplit,
    retriever_plans: Sequence[PartPlan],
    ranker_plan: PartPlan,
) -> CalibratedSplit:
    """Widen ``basic`` (the :func:`split_budget` of ``spec``) so that the PLD-composed ε of all
    its parts' planned releases is the requested ε (see the module docstring).

    Args:
        spec: The fit's resolved spec.
        basic: Its basic split.
        retriever_plans: One plan per distinct retriever fit (the same plans serve the refit):
            the releases its private fit makes at a spec, from the data's shape alone.
        ranker_plan: The ranker's plan.

    Raises:
        ConfigError: As :func:`calibrate_split`.
    """
    specs = [*basic.retrievers, basic.ranker, *basic.refit]
    plans = [*retriever_plans, ranker_plan, *(retriever_plans if basic.refit else ())]

    def at(part: PrivacySpec, plan: PartPlan) -> Callable[[float, float], Sequence[Release]]:
        return lambda epsilon, _delta: plan(part.model_copy(update={"epsilon": epsilon}))

    parts = [(s.epsilon, s.require_delta(), at(s, p)) for s, p in zip(specs, plans, strict=True)]
    scale, _, composed = calibrate_split(
        parts,
        float(spec.epsilon),
        float(spec.require_delta()),
        tolerance=CALIBRATION_TOLERANCE * float(spec.epsilon),
    )

    def widened(part: PrivacySpec) -> PrivacySpec:
        return part.model_copy(update={"epsilon": scale * float(part.epsilon)})

    budget = BudgetSplit(
        retrievers=tuple(widened(s) for s in basic.retrievers),
        refit=tuple(widened(s) for s in basic.refit),
        ranker=widened(basic.ranker),
    )
    wide = [*budget.retrievers, budget.ranker, *budget.refit]
    planned = tuple(r for s, p in zip(wide, plans, strict=True) for r in p(s))
    return CalibratedSplit(budget, scale, composed, planned)


def _accounted(release: Release) -> tuple[float, int, float | None, int | None]:
    return (release.noise_multiplier, release.count, release.sampling_rate, release.population)


def check_planned(planned: Sequence[Release], made: Sequence[Release]) -> None:
    """Refuse a fit whose releases are not the planned ones (what the accountant sees: noise
    multiplier, count, sampling rate, cohort), so a calibrated guarantee never covers a fit it
    did not account.

    Raises:
        ModelFitError: They differ.
    """
    if len(planned) != len(made) or any(
        not all(
            a == b or (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b))
            for a, b in zip(_accounted(p), _accounted(m), strict=True)
        )
        for p, m in zip(planned, made, strict=False)
    ):
        raise ModelFitError(
            "two-stage: the private fit's releases are not the ones its budget was calibrated "
            f"on (planned {[_accounted(r) for r in planned]}, made "
            f"{[_accounted(r) for r in made]}); refusing to release it"
        )


def compose_fit(
    spec: PrivacySpec,
    guarantees: list[PrivacyGuarantee],
    n_users: int,
    ranker_share: float,
    calibrated: CalibratedSplit | None = None,
) -> PrivacyGuarantee:
    """The guarantee of the whole fit: every release of ``guarantees``, in order, composed.

    ``epsilon``/``delta`` are the spec's: with ``calibrated``, proved by the PLD accountant of
    the composition (see the module docstring); else the basic-composition bound of the split.
    ``epsilons`` holds the accountants' ε of the same composition.
    """
    releases: list[Release] = [r for g in guarantees for r in g.composition]
    # 1 for a real release; a test's scaled noise (the same in every part) otherwise.
    scales = [g.noise_scale_for_testing for g in guarantees]
    scale = next((value for value in scales if value != 1), 1.0)
    if calibrated is None:
        calibration, accounting = (
            "budget-split",
            f"basic composition of {len(guarantees)} user-level releases (retriever fits and "
            f"the ranker's DP-SGD, the ranker at share {ranker_share:g} of ε and δ, each "
            "calibrated by its own mechanism); accountants' ε of the same releases in "
            "'epsilons'",
        )
    else:
        check_planned(calibrated.planned, releases)
        calibration, accounting = (
            "pld-calibrated-split",
            f"PLD composition (dp_accounting) of {len(guarantees)} user-level releases "
            f"(retriever fits and the ranker's DP-SGD): the basic split (the ranker at share "
            f"{ranker_share:g}) scaled by s = {calibrated.scale:.4g}, chosen from the data's "
            f"shape, so that the composed ε is {calibrated.composed_epsilon:.4g} ≤ "
            f"{float(spec.epsilon):g}; accountants' ε of the same releases in 'epsilons'",
        )
    return compose_guarantee(
        releases,
        spec,
        mechanism="two-stage(" + "+".join(g.mechanism for g in guarantees) + ")",
        calibration=calibration,
        accounting=accounting,
        n_users=n_users,
        released=(
            "the retrievers' private item-side states, their noisy popularity (the item "
            "features) and the listwise ranker's weights"
        ),
        noise_scale=scale,
    )


BISECTION_STEPS = 60  # the bracket [low, high] shrinks to 2^-60 of its width: far past tolerance


def calibrate_split(
    parts: Sequence[tuple[float, float, Callable[[float, float], Sequence[Release]]]],
    epsilon: float,
    delta: float,
    tolerance: float = 1e-3,
    pld_discretization: float = PLD_DISCRETIZATION,
) -> tuple[float, tuple[float, ...], float]:
    r"""Scale a basic-composition split so the PLD-composed ε of all releases is ``epsilon``.

    Each part ``i`` is ``(ε_i, δ_i, plan_i)``: its basic-composition share (the
    :func:`split_budget` figures, with :math:`\sum ε_i = ε`, :math:`\sum δ_i = δ`) and
    ``plan_i(ε', δ_i)``, the releases its mechanism makes when calibrated to ``(ε', δ_i)``,
    computed from the data's *shape* only (user and item counts, the contribution bound,
    the DP-SGD schedule), never from its values, so the choice of budget is itself not a
    function of any user's data. One scale :math:`s \ge 1` is bisected so that

    .. math:: \varepsilon_\text{PLD}\big(\textstyle\bigcup_i \mathrm{plan}_i(s\,ε_i, δ_i)\big)
        \text{ at } δ \;\in\; [ε - \text{tolerance}, ε],

    the PLD accountant (pessimistic discretisation, an upper bound) composing every release
    of every part in order. Because the parts' releases are then exactly those accounted,
    the fit is user-level (PLD-composed ε, δ)-DP under add/remove-one-user adjacency, with
    the same trust model as each part (a trusted curator holding the raw data). Each part
    gets :math:`s ε_i \ge ε_i`, at least its basic-composition budget: at ``s = 1`` the
    PLD ε is at most the basic sum ε, so the bisection only ever widens the budget.

    Args:
        parts: ``(ε_i, δ_i, plan_i)`` per part, in release order.
        epsilon: The requested ε (the sum of the ``ε_i``).
        delta: The requested δ (the sum of the ``δ_i``).
        tolerance: Absolute slack below ``epsilon`` the composed ε may land at.
        pld_discretization: The PLD value-discretisation interval.

    Returns:
        ``(s, per-part ε, composed ε)``: the composed ε never exceeds ``epsilon``.

    Raises:
        ConfigError: No parts, or the plans at ``s = 1`` already compose above ``epsilon``
            (a plan that does not meet its own (ε_i, δ_i)).
    """
    if not parts:
        raise ConfigError("calibrate_split: no parts to calibrate")

    def composed(scale: float) -> float:
        releases = [r for eps_i, delta_i, plan in parts for r in plan(scale * eps_i, delta_i)]
        return composed_epsilon(releases, delta, "pld", pld_discretization)

    low, at_low = 1.0, composed(1.0)
    if at_low > epsilon * (1 + 1e-9):
        raise ConfigError(
            f"calibrate_split: the parts at their basic-composition budgets already compose "
            f"to ε = {at_low:.6g} > the requested {epsilon:.6g}"
        )
    high = 2.0
    while (at_high := composed(high)) <= epsilon:
        if high >= 2.0**BISECTION_STEPS:
            raise ConfigError(
                "calibrate_split: the parts' releases do not grow with their ε (the composed ε "
                f"stays at {at_high:.6g} <= {epsilon:.6g} at scale {high:g})"
            )
        low, at_low = high, at_high
        high *= 2
    for _ in range(BISECTION_STEPS):  # the PLD's discretisation may step: no endless loop
        if epsilon - at_low <= tolerance:
            break
        middle = (low + high) / 2
        value = composed(middle)
        if value <= epsilon:
            low, at_low = middle, value
        else:
            high = middle
    return low, tuple(low * eps_i for eps_i, _, _ in parts), at_low
