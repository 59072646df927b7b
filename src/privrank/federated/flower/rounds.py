"""The server side of a deployment run: the simulator's rounds over devices that answer messages.

:func:`run_deployment` is the ServerApp's algorithm without the Flower plumbing: it talks to the
devices through a :class:`DeviceTransport` (over a Flower ``Grid`` in
:mod:`privrank.federated.flower.server_app`; in-process in the tests). A run:

1. **Enrol**: every SuperNode reports the enrolment numbers of the devices it holds; together
   they must be exactly ``0..N-1`` (the job's population).
2. **Item counts**: every device sends its 0/1 item vector (at most ``c`` items under DP); the
   checked sum (plus Gaussian noise, charged with the run's δ, in a private run) is the
   cold-start popularity and the server step's counts, as in the simulator.
3. **Rounds**: the cohort of round ``t`` is the simulator's (same seed, same sampling over the
   same device numbers); the server sends :math:`H` (and the round's clipping bound) to the
   SuperNodes holding cohort devices, each device computes and clips its own update
   (:func:`~privrank.federated.flower.devices.device_updates`), the server checks and sums the
   updates that arrive (:class:`~privrank.federated.aggregation.SumAggregator`), adds the
   DP-FedAvg noise (:class:`~privrank.privacy.dp_fedavg.DPFedAvgMechanism`) and steps
   (:class:`~privrank.models._fedmf_rounds.FedMFServer`). Devices that have not answered within
   the round's timeout dropped out: the round goes on with the survivors (counted as
   ``dropped``); in a run without DP, fewer than ``min_clients`` accepted updates end the round
   without a release. A private round is always released and charged, whatever its cohort and
   its drop-outs (noise only when nobody answers): skipping it would reveal, without noise,
   how many sampled devices answered (``min_clients`` must be 1, as in the simulator).

**Privacy.** The same DP-FedAvg guarantee as the simulator (:mod:`privrank.privacy.dp_fedavg`):
user-level (ε, δ)-DP, one device = one user, Poisson sampling of the cohort by the server, each
device clipping its own update, Gaussian noise on the sum. Trust: the server sees each device's
clipped update (no secure aggregation in this path) and is trusted to add the noise and sample
honestly; the released models (every round's :math:`H`) are what the guarantee covers. A device
that drops out only lowers the sum; the mean divides by the *expected* cohort, so the
sensitivity and the accounting do not change.

With no drop-out the run computes what :func:`~privrank.federated.simulator.simulate` computes
on the same data, seed and settings (the same cohorts, updates and steps; the sums are added in
another order, so equal up to float rounding).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from privrank.errors import ConfigError
from privrank.federated.aggregation import RoundSum, SumAggregator
from privrank.federated.cohorts import sample_cohort
from privrank.federated.flower.job import FlowerJob
from privrank.federated.item_counts import noisy_counts
from privrank.federated.rounds import step_plain, step_private
from privrank.federated.settings import RoundReport
from privrank.federated.simulator import check_private_min_clients, record_round
from privrank.federated.state import ServerState
from privrank.models._fedmf_rounds import FedMFServer
from privrank.privacy.dp_fedavg import (
    AdaptiveClipping,
    DPFedAvgMechanism,
    FedAvgPlan,
    dp_fedavg_guarantee,
    plan_dp_fedavg,
)
from privrank.privacy.mechanism import PrivacyGuarantee
from privrank.privacy.spec import PrivacySpec
from privrank.privacy.updates import DenseUpdates
from privrank.workflow.spend import RoundLedger

__all__ = ["DeploymentResult", "DeviceTransport", "NodeAnswer", "run_deployment"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeAnswer:
    """What one SuperNode sent back for its devices.

    Attributes:
        devices: ``(k,)`` the enrolment numbers the vectors are for.
        vectors: ``(k, dim)`` one row per device.
        unclipped: ``(k,)`` bool, the devices' clipping bits.
    """

    devices: np.ndarray
    vectors: np.ndarray
    unclipped: np.ndarray


class DeviceTransport(Protocol):
    """How the server reaches the SuperNodes (a node is named by an ``int``)."""

    def enrol(self) -> Mapping[int, np.ndarray]:
        """Each reachable node's devices (enrolment numbers)."""
        ...

    def counts(self, bound: int | None) -> Sequence[NodeAnswer]:
        """Every node's devices' 0/1 item vectors (``unclipped`` unused)."""
        ...

    def updates(
        self,
        round_index: int,
        assignment: Mapping[int, np.ndarray],
        item_factors: np.ndarray,
        bound: float | None,
    ) -> Sequence[NodeAnswer]:
        """The round's answers of the nodes in ``assignment`` (node → its cohort devices) that
        answered in time."""
        ...


@dataclass(frozen=True)
class DeploymentResult:
    """A finished deployment run.

    Attributes:
        state: The final server state (``item_factors``, ``item_counts``).
        plan: The DP-FedAvg plan (``None``: non-private).
        guarantee: The guarantee of the released rounds (``None``: non-private).
        seconds: Wall time of the rounds run.
        round_seconds: Wall time of each round run.
    """

    state: ServerState
    plan: FedAvgPlan | None
    guarantee: PrivacyGuarantee | None
    seconds: float
    round_seconds: list[float]


def _identity(job: FlowerJob, resolved: PrivacySpec | None) -> dict[str, object]:
    return {
        "model": job.model.model_dump(mode="json"),
        "settings": job.settings.model_dump(mode="json"),
        "privacy": None if resolved is None else resolved.model_dump(mode="json"),
        "train_fingerprint": job.data_fingerprint,
        "runtime": "flower",
    }


def _enrolled(job: FlowerJob, transport: DeviceTransport) -> dict[int, np.ndarray]:
    nodes = {int(k): np.asarray(v, dtype=np.int64) for k, v in transport.enrol().items()}
    ids = np.concatenate(list(nodes.values())) if nodes else np.zeros(0, dtype=np.int64)
    if len(ids) != len(np.unique(ids)):
        raise ConfigError("enrolment: two SuperNodes claim the same device")
    if not np.array_equal(np.sort(ids), np.arange(job.population)):
        raise ConfigError(
            f"enrolment: {len(ids)} device(s) on {len(nodes)} SuperNode(s) enrolled, expected "
            f"exactly the devices 0..{job.population - 1} of the job; start the missing "
            "SuperNodes (or raise --enrol-timeout)"
        )
    return nodes


def _sum(
    answers: Sequence[NodeAnswer],
    asked: np.ndarray,
    dim: int,
    bound: float | None,
    round_index: int,
) -> tuple[RoundSum, int]:
    """The checked sum of the answers to ``asked``, and how many asked devices dropped out."""
    aggregator = SumAggregator(dim, bound, round_index)
    wanted = set(asked.tolist())
    seen: set[int] = set()
    for answer in sorted(answers, key=lambda a: int(a.devices[0]) if len(a.devices) else -1):
        devices = [int(x) for x in answer.devices]
        if (
            not set(devices) <= wanted
            or set(devices) & seen
            or answer.vectors.ndim != 2
            or answer.vectors.shape[0] != len(devices)
        ):
            aggregator.add(DenseUpdates.from_arrays([np.zeros(0)] * len(devices), dim))
            log.warning("round %d: a SuperNode answered for devices it was not asked", round_index)
            continue
        seen |= set(devices)
        if answer.vectors.shape[1] != dim:
            updates = DenseUpdates.from_arrays(list(answer.vectors), dim)
        else:
            updates = DenseUpdates(np.asarray(answer.vectors, dtype=np.float64))
        aggregator.add(updates, np.asarray(answer.unclipped, dtype=bool))
    return aggregator.finish(), len(wanted - seen)


def _assignment(nodes: Mapping[int, np.ndarray], cohort: np.ndarray) -> dict[int, np.ndarray]:
    chosen = {}
    for node, devices in nodes.items():
        mine = np.intersect1d(devices, cohort)
        if len(mine):
            chosen[node] = mine
    return chosen


def run_deployment(
    job: FlowerJob,
    transport: DeviceTransport,
    progress: Callable[[RoundReport], None] | None = None,
) -> DeploymentResult:
    """Run (or resume) the job's rounds over the transport's devices.

    Raises:
        ConfigError: Inconsistent job, enrolment that does not match the population, or a
            run directory holding another run (or a state without ``resume``).
        PrivacyBudgetExceeded: The budget does not cover the whole run (before any round).
    """
    settings = job.settings
    population = job.population
    resolved = None if job.privacy is None else job.privacy.resolve(population)
    if resolved is not None and settings.sampling != "poisson":
        raise ConfigError("DP-FedAvg is accounted for Poisson sampling only (--sampling poisson)")
    if resolved is not None:
        check_private_min_clients(settings, population)
    if resolved is not None and not job.ledger_key:
        raise ConfigError("a private federated run needs a ledger key to charge its rounds to")
    adaptive = None
    if resolved is not None and settings.adaptive_clipping:
        adaptive = AdaptiveClipping(
            target_quantile=settings.target_quantile,
            learning_rate=settings.clipping_learning_rate,
        )
    plan = (
        None
        if resolved is None
        else plan_dp_fedavg(
            resolved, population, settings.clients_per_round, settings.rounds, adaptive
        )
    )
    ledger = (
        None
        if resolved is None or job.ledger_key is None
        else RoundLedger(
            job.ledger_key, f"federated fedmf (flower) -> {job.run_dir}", job.ledger_url
        )
    )
    if ledger is None:
        return _run(job, transport, progress, resolved, plan, adaptive, None)
    with ledger:
        return _run(job, transport, progress, resolved, plan, adaptive, ledger)


def _run(
    job: FlowerJob,
    transport: DeviceTransport,
    progress: Callable[[RoundReport], None] | None,
    resolved: PrivacySpec | None,
    plan: FedAvgPlan | None,
    adaptive: AdaptiveClipping | None,
    ledger: RoundLedger | None,
) -> DeploymentResult:
    settings = job.settings
    config = job.model
    run_dir = Path(job.run_dir)
    identity = _identity(job, resolved)
    nodes = _enrolled(job, transport)
    d = config.factors
    if ServerState.exists(run_dir):
        if not job.resume:
            raise ConfigError(
                f"{run_dir} holds the state of a federated run; pass --resume to continue it "
                "or choose another run directory"
            )
        state = ServerState.load(run_dir, identity)
    else:
        if job.resume:
            raise ConfigError(f"--resume: {run_dir} holds no federated run state")
        if ledger is not None and plan is not None:
            ledger.check_plan(plan.epsilon_after(plan.rounds), plan.delta)
        counts = _release_counts(job, transport, resolved, plan, ledger)
        state = ServerState(
            round=0,
            released_rounds=0,
            clipping_norm=None if resolved is None else float(resolved.clipping_norm),
            arrays={
                "item_factors": FedMFServer.initial_factors(config, job.n_items, settings.seed),
                "item_counts": counts.astype(np.float32),
            },
            identity=identity,
            spend_ids=[] if ledger is None else [s.spend_id for s in ledger.spends],
        )
        state.save(run_dir)
    server = FedMFServer(
        config, job.population, state.arrays["item_counts"], settings.server_learning_rate
    )
    mechanism = None
    if plan is not None and state.clipping_norm is not None:
        mechanism = DPFedAvgMechanism(plan, state.clipping_norm, adaptive)
    started = time.perf_counter()
    seconds = []
    dim = job.n_items * d + d * d
    for round_index in range(state.round + 1, settings.rounds + 1):
        tick = time.perf_counter()
        report = _round(
            round_index, job, transport, nodes, server, state, plan, mechanism, ledger,
            resolved, dim,
        )  # fmt: skip
        report = record_round(report, round_index, tick, state, run_dir, ledger, progress)
        seconds.append(report.seconds)
    guarantee = None
    if plan is not None and resolved is not None and mechanism is not None:
        guarantee = dp_fedavg_guarantee(
            plan, resolved, state.released_rounds, noise_scale=mechanism.noise_scale
        )
    return DeploymentResult(state, plan, guarantee, time.perf_counter() - started, seconds)


def _release_counts(
    job: FlowerJob,
    transport: DeviceTransport,
    resolved: PrivacySpec | None,
    plan: FedAvgPlan | None,
    ledger: RoundLedger | None,
) -> np.ndarray:
    """The summed item counts (noised and charged with the run's δ in a private run)."""
    bound = None if plan is None else plan.contribution_bound
    answers = transport.counts(bound)
    total, dropped = _sum(
        answers,
        np.arange(job.population),
        job.n_items,
        None if bound is None else float(np.sqrt(bound)),
        0,
    )
    if dropped:
        log.warning("item counts: %d device(s) did not answer", dropped)
    if resolved is None or plan is None or ledger is None:
        return total.total
    return noisy_counts(total.total, resolved, plan, ledger)


def _round(
    round_index: int,
    job: FlowerJob,
    transport: DeviceTransport,
    nodes: Mapping[int, np.ndarray],
    server: FedMFServer,
    state: ServerState,
    plan: FedAvgPlan | None,
    mechanism: DPFedAvgMechanism | None,
    ledger: RoundLedger | None,
    spec: PrivacySpec | None,
    dim: int,
) -> RoundReport:
    """One round (the simulator's ``_round`` with the devices reached by messages)."""
    settings = job.settings
    cohort = sample_cohort(settings, job.population, round_index)
    epsilon_before = None if plan is None else plan.epsilon_after(state.released_rounds)
    skipped = RoundReport(
        round_index, settings.rounds, len(cohort), 0, {}, False, float("nan"), epsilon_before,
        state.clipping_norm, 0.0,
    )  # fmt: skip
    private = not (ledger is None or plan is None or mechanism is None or spec is None)
    if not private and len(cohort) < settings.min_clients:
        return skipped  # a private round is released whatever its cohort (module docstring)
    assignment = _assignment(nodes, cohort)

    def collect(bound: float | None) -> tuple[RoundSum, dict[str, int]]:
        answers = transport.updates(round_index, assignment, state.arrays["item_factors"], bound)
        total, dropped = _sum(answers, cohort, dim, bound, round_index)
        return total, {**total.refused, "dropped": dropped}

    if ledger is None or plan is None or mechanism is None or spec is None:
        total, refused = collect(None)
        if total.accepted < settings.min_clients:
            return _reported(skipped, total, refused, released=False)
        step_plain(total, settings, server, state, round_index)
        return _reported(skipped, total, refused, released=True)
    epsilon_after = plan.epsilon_after(state.released_rounds + 1)
    with ledger.round(
        epsilon_after - (epsilon_before or 0.0), 0.0, f"round {round_index}"
    ) as released:
        total, refused = collect(mechanism.clipping_norm)
        step_private(total, settings, server, state, plan, mechanism, spec, round_index)
        released[0] = True
    report = _reported(skipped, total, refused, released=True)
    return RoundReport(**{**report.__dict__, "epsilon": epsilon_after})


def _reported(
    skipped: RoundReport, total: RoundSum, refused: dict[str, int], *, released: bool
) -> RoundReport:
    return RoundReport(
        **{**skipped.__dict__, "accepted": total.accepted, "refused": refused, "released": released}
    )
