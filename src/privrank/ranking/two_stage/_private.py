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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.calibration import PLD_DISCRETIZATION, composed_epsilon
from privrank.privacy.mechanism import PrivacyGuarantee, Release, compose_guarantee
from privrank.privacy.spec import PrivacySpec

__all__ = ["BudgetSplit", "calibrate_split", "compose_fit", "private_item_table", "split_budget"]


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


def compose_fit(
    spec: PrivacySpec, guarantees: list[PrivacyGuarantee], n_users: int, ranker_share: float
) -> PrivacyGuarantee:
    """The guarantee of the whole fit: every release of ``guarantees``, in order, composed.

    ``epsilon``/``delta`` are the spec's (the basic-composition bound of the split, see the
    module docstring); ``epsilons`` holds the accountants' ε of the same composition.
    """
    releases: list[Release] = [r for g in guarantees for r in g.composition]
    # 1 for a real release; a test's scaled noise (the same in every part) otherwise.
    scales = [g.noise_scale_for_testing for g in guarantees]
    scale = next((value for value in scales if value != 1), 1.0)
    return compose_guarantee(
        releases,
        spec,
        mechanism="two-stage(" + "+".join(g.mechanism for g in guarantees) + ")",
        calibration="budget-split",
        accounting=(
            f"basic composition of {len(guarantees)} user-level releases (retriever fits and "
            f"the ranker's DP-SGD, the ranker at share {ranker_share:g} of ε and δ, each "
            "calibrated by its own mechanism); accountants' ε of the same releases in "
            "'epsilons'"
        ),
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
