"""One round on the server: sample the cohort, reserve the round's ε, run the devices, add the
noise to the checked sum, step the model, adapt the clipping norm, commit; and the same under
distributed DP (devices noise, SecAgg+ unmasks, the server adds nothing).

**Which rounds are released.** A non-private round with fewer sampled (or accepted) devices than
``min_clients`` releases nothing. A private round must not decide so: under Poisson sampling the
cohort's size depends on who is in the data, and a skipped round would publish, without noise,
that it was small (one device more or less can flip the decision), a release no accountant here
covers. So a **DP-FedAvg round with the plain aggregation is always released and charged**: the
noisy sum of whatever the cohort sent (nothing, for an empty cohort: the noise alone), which is
exactly the sampled Gaussian mechanism the accountant composes (refused updates count as the
zero update, which is within the bound). Its ``min_clients`` must be 1 under Poisson sampling
(and at most the cohort with a fixed cohort, whose size is public); the simulator refuses
anything else.

**Central DP-FedAvg over SecAgg+** (``secure`` with a privacy spec, not distributed DP).
SecAgg+ cannot unmask a sum of fewer than ``min_clients`` survivors (nor one whose dropped
devices' masks cannot be recovered), so such a round aborts and releases nothing. That decision
must not depend on the data, and under Poisson sampling it would: the cohort's size depends on
who is in the data, one device more can lift a cohort over the threshold, and the released sum
then jumps by the whole cohort's updates (up to ``min_clients · C``, not ``C``), a release the
sampled Gaussian's accounting does not cover (nor would releasing the noise alone in its place).
So central DP over SecAgg+ **requires fixed cohorts** (``sampling="fixed"``; the simulator
refuses Poisson sampling before any round), and then nothing the protocol decides depends on
any device's data: the cohort has exactly ``m`` devices; a device whose update is refused sends
the zero update and stays in the protocol
(:class:`~privrank.federated.secure_aggregation.SecAggAggregator`); the dropouts and SecAgg+'s
graph are drawn from the round's seed. Whether a round aborts is thus a function of the seed
alone, public, and an aborted round is neither released nor charged; the released rounds
compose under the fixed-cohort accountant (replace-one adjacency), exactly as without SecAgg+.
Distributed DP keeps Poisson sampling: its neighbouring relation replaces a device's
contribution by zero and it claims no amplification by sampling, so the cohort (and the
dropouts, drawn from the round's seed, and the refused devices, which send zero) does not
depend on the data (:mod:`privrank.privacy.distributed_dp_plan`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from privrank.federated.aggregation import RoundSum
from privrank.federated.canaries import Canaries
from privrank.federated.clients import ClientRunner, DeviceCode, ServerCode, run_clients
from privrank.federated.cohorts import noise_rng, round_learning_rate, sample_cohort
from privrank.federated.secure_aggregation import SecAggAggregator, SecureAggregation
from privrank.federated.settings import FederatedSettings, RoundReport
from privrank.federated.state import ServerState
from privrank.privacy.distributed_dp_plan import DistributedDPPlan
from privrank.privacy.dp_fedavg import DPFedAvgMechanism, FedAvgPlan
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.spend import RoundLedger

__all__ = [
    "RoundOpening",
    "adapt_clipping_norm",
    "central_round",
    "distributed_round",
    "open_round",
    "round_report",
    "step_plain",
    "step_private",
]


@dataclass(frozen=True)
class RoundOpening:
    """What a round fixes before any device is asked: its cohort, the ε it spends if released,
    and the report it ends with if nothing is released.

    Attributes:
        cohort: The sampled devices (:func:`~privrank.federated.cohorts.sample_cohort`).
        skipped: The round's report when nothing is released (no device accepted yet).
        epsilon_before: ε spent by the rounds released so far (``None``: non-private).
        epsilon_after: ε spent once this round is released too (``None``: non-private).
        min_clients: The fewest devices a round may aggregate (the run's setting).
    """

    cohort: np.ndarray
    skipped: RoundReport
    epsilon_before: float | None
    epsilon_after: float | None
    min_clients: int

    @property
    def too_few(self) -> bool:
        """Fewer devices were sampled than ``min_clients``."""
        return len(self.cohort) < self.min_clients

    @property
    def epsilon_cost(self) -> float:
        """The round's ε charge: the increase of the composed ε (δ was charged with the first
        release, the item counts; rounds add only ε)."""
        return (self.epsilon_after or 0.0) - (self.epsilon_before or 0.0)

    def released(self, report: RoundReport) -> RoundReport:
        """``report`` of a released round, with the ε spent after it."""
        return dataclasses.replace(report, epsilon=self.epsilon_after)


class _Accountant(Protocol):
    def epsilon_after(self, rounds: int) -> float: ...


def open_round(
    round_index: int,
    settings: FederatedSettings,
    population: int,
    state: ServerState,
    accountant: _Accountant | None,
    clipping_norm: float | None,
) -> RoundOpening:
    """Sample round ``round_index``'s cohort from ``population`` devices and price the round.

    Args:
        round_index: The round (1-based).
        settings: Cohort sampling, rounds and ``min_clients``.
        population: Devices in the federation (the cohort's sampling frame).
        state: The server state (its released rounds fix the ε before and after).
        accountant: The run's plan (DP-FedAvg's or distributed DP's; ``None``: non-private).
        clipping_norm: The round's bound :math:`C`, shown in the report.
    """
    cohort = sample_cohort(settings, population, round_index)
    before = after = None
    if accountant is not None:
        before = accountant.epsilon_after(state.released_rounds)
        after = accountant.epsilon_after(state.released_rounds + 1)
    skipped = RoundReport(
        round_index, settings.rounds, len(cohort), 0, {}, False, float("nan"), before,
        clipping_norm, 0.0,
    )  # fmt: skip
    return RoundOpening(cohort, skipped, before, after, settings.min_clients)


def central_round(
    round_index: int,
    settings: FederatedSettings,
    histories: sp.csr_matrix,
    client: DeviceCode,
    server: ServerCode,
    state: ServerState,
    plan: FedAvgPlan | None,
    mechanism: DPFedAvgMechanism | None,
    ledger: RoundLedger | None,
    spec: PrivacySpec | None,
    canaries: Canaries | None = None,
    secure: SecureAggregation | None = None,
    runner: ClientRunner | None = None,
) -> RoundReport:
    """One round of plain federated averaging or of DP-FedAvg (central noise), its devices run
    by ``runner`` (default: in this process)."""
    opening = open_round(
        round_index, settings, histories.shape[0], state, plan, state.clipping_norm
    )
    cohort, skipped = opening.cohort, opening.skipped
    private = not (ledger is None or plan is None or mechanism is None or spec is None)
    if (not private or secure is not None) and opening.too_few:
        return skipped  # a private plain round is released whatever its cohort (see above)
    if ledger is None or plan is None or mechanism is None or spec is None:
        total, losses = run_clients(
            cohort, settings, histories, client, state, None, round_index, canaries, secure,
            runner=runner,
        )  # fmt: skip
        if total.accepted < settings.min_clients:
            return round_report(skipped, total, losses, released=False)
        if canaries is not None:
            state.arrays["released_sum"] += total.total
        step_plain(total, settings, server, state, round_index)
        return round_report(skipped, total, losses, released=True)
    with ledger.round(opening.epsilon_cost, 0.0, f"round {round_index}") as released:
        total, losses = run_clients(
            cohort,
            settings,
            histories,
            client,
            state,
            mechanism.clipping_norm,
            round_index,
            canaries,
            secure,
            runner=runner,
        )
        if secure is not None and total.accepted < settings.min_clients:
            # aborted: with a fixed cohort a function of the seed alone (see above)
            return round_report(skipped, total, losses, released=False)
        noisy = step_private(total, settings, server, state, plan, mechanism, spec, round_index)
        if canaries is not None:
            state.arrays["released_sum"] += noisy
        released[0] = True
    return opening.released(round_report(skipped, total, losses, released=True))


def step_plain(
    total: RoundSum,
    settings: FederatedSettings,
    server: ServerCode,
    state: ServerState,
    round_index: int,
) -> None:
    """Release a round without DP: the server steps on the accepted updates' mean."""
    mean = total.total / total.accepted
    server.apply(state.arrays, mean, round_learning_rate(settings, round_index))
    state.released_rounds += 1


def step_private(
    total: RoundSum,
    settings: FederatedSettings,
    server: ServerCode,
    state: ServerState,
    plan: FedAvgPlan,
    mechanism: DPFedAvgMechanism,
    spec: PrivacySpec,
    round_index: int,
) -> np.ndarray:
    """Release a DP-FedAvg round: Gaussian noise on the clipped sum (the round's own noise
    stream), the server step on ``noisy / expected cohort``, then the adaptive clipping norm's
    update from the noisy unclipped fraction (the same stream).

    Returns:
        The noisy sum (what the round releases).
    """
    rng = noise_rng(spec, round_index)
    noisy = mechanism.add_noise(total.total, rng)
    server.apply(
        state.arrays, noisy / plan.expected_cohort, round_learning_rate(settings, round_index)
    )
    if mechanism.adaptive is not None:
        fraction = mechanism.noisy_unclipped_fraction(total.unclipped, rng)
        state.clipping_norm = mechanism.adapt(fraction)
    state.released_rounds += 1
    return noisy


def round_report(
    skipped: RoundReport, total: RoundSum, losses: np.ndarray, *, released: bool
) -> RoundReport:
    loss = float(np.mean(losses)) if len(losses) else float("nan")
    return RoundReport(
        **{
            **skipped.__dict__,
            "accepted": total.accepted,
            "refused": dict(total.refused),
            "released": released,
            "loss": loss,
        }
    )


def distributed_round(
    round_index: int,
    settings: FederatedSettings,
    histories: sp.csr_matrix,
    client: DeviceCode,
    server: ServerCode,
    state: ServerState,
    ddp: DistributedDPPlan,
    secure: SecureAggregation,
    ledger: RoundLedger,
    spec: PrivacySpec,
    canaries: Canaries | None,
) -> RoundReport:
    """One round under distributed DP: devices clip, round, noise and mask; SecAgg+ unmasks
    the noisy sum; the server adds no noise. Charged only when released."""
    from privrank.privacy.crypto.secagg import SecAggAbort

    adaptive = ddp.bits is not None and ddp.adaptive is not None
    bound = (
        float(state.clipping_norm)
        if adaptive and state.clipping_norm is not None
        else float(spec.clipping_norm)
    )
    opening = open_round(round_index, settings, histories.shape[0], state, ddp, bound)
    cohort, skipped = opening.cohort, opening.skipped
    if opening.too_few:
        return skipped
    extra = 0 if canaries is None else len(canaries.directions)
    aggregator = SecAggAggregator(
        client.update_dim,
        bound,
        secure,
        max_clients=histories.shape[0] + extra,
        round_index=round_index,
        seed=settings.seed,
        min_survivors=settings.min_clients,
        mechanism=ddp.rounds,
        noise_rng=noise_rng(spec, round_index),
        bit_mechanism=ddp.bits,
    )
    with ledger.round(opening.epsilon_cost, 0.0, f"round {round_index}") as released:
        try:
            total, losses = run_clients(
                cohort, settings, histories, client, state, bound, round_index, canaries,
                aggregator=aggregator,
            )  # fmt: skip
        except SecAggAbort:
            return RoundReport(**{**skipped.__dict__, "refused": {"secagg_abort": len(cohort)}})
        if total.accepted < settings.min_clients:
            return round_report(skipped, total, losses, released=False)
        if canaries is not None:
            state.arrays["released_sum"] += total.total
        server.apply(
            state.arrays, total.total / total.accepted, round_learning_rate(settings, round_index)
        )
        if adaptive and total.noisy_unclipped is not None:
            state.clipping_norm = adapt_clipping_norm(
                bound, total.noisy_unclipped / total.accepted, ddp
            )
        state.released_rounds += 1
        released[0] = True
    return opening.released(round_report(skipped, total, losses, released=True))


def adapt_clipping_norm(bound: float, unclipped_fraction: float, ddp: DistributedDPPlan) -> float:
    """Adaptive clipping's step under distributed DP (post-processing of released sums only):
    :math:`C_{t+1} = C_t \\exp(-\\eta_C(\\bar b - \\gamma))`, with :math:`\\bar b` the noisy
    unclipped fraction (the unmasked bit sum over the surviving inputs), so the next round's
    bound is public. Returns ``bound`` unchanged without adaptive clipping."""
    if ddp.adaptive is None:
        return bound
    rule = ddp.adaptive
    return float(bound * np.exp(-rule.learning_rate * (unclipped_fraction - rule.target_quantile)))
