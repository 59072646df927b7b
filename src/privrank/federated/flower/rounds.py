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

**With SecAgg+** (``job.secure``, :mod:`privrank.federated.flower.secure`): the item counts
and every round are summed by SecAgg+ over Flower messages; the server sees masked vectors and
sums only, and the devices check and encode their own updates. Central DP over SecAgg+ needs
fixed cohorts (:func:`~privrank.federated.simulator.check_private_min_clients` with
``secure=True``, as the simulator): the cohort's size is public, a refused device sends the zero
update and stays in the protocol, and the SecAgg+ graph comes from the run's seed. A round with
fewer than ``min_clients`` survivors aborts: neither released nor charged (its reservation is
given back). Unlike the simulator, whose drop-outs are drawn from the seed, a deployment's
drop-outs are the devices' own; the guarantee assumes, as the plain path does, that whether a
device answers does not depend on its data. The noise, the accountant (fixed cohorts, replace-one
adjacency) and the ledger's charges are the simulator's: the counts with the run's δ, then each
released round's ε increment.

**With distributed DP** (``job.distributed_dp``, :mod:`privrank.privacy.distributed_dp_plan`):
the server plans exactly as the simulator does (:func:`plan_distributed_dp` with the same
population, dimension, rounds, ``min_clients``, ring and, with ``secret_sampling``, rate), and
every release is a SecAgg+ exchange whose devices clip, round and add their own discrete
Gaussian share before masking (:mod:`privrank.federated.flower.secure`); the server adds no
noise and steps on the unmasked noisy sum over its survivors. Release 0 is the item counts of
round 0's cohort (at most ``c`` items each, scaled by ``N / survivors``), charged with the run's
δ; each round whose SecAgg+ exchange unmasks at least ``min_clients`` survivors is released and
charged its ε increment (:meth:`~privrank.privacy.distributed_dp_plan.DistributedDPPlan.
epsilon_after`); a round with fewer, or aborted, is neither released nor charged. Trust: the
server is untrusted for individual updates and never sees an un-noised sum (honest-but-curious
for the protocol, reporting survivors truthfully); each device is trusted to clip and to add its
own noise share; the accounting counts on the noise of at least ``min_clients`` devices (clients
refuse to unmask fewer). With ``secret_sampling``: on this path the ServerApp draws the cohort
and addresses its devices, so *the server knows who was sampled*: the amplified ε holds only
against parties that see the released sums or model but not the cohort (an analyst, a model's
users), and the server itself gets the un-amplified ε of the same noise, which the guarantee
states beside it. (Device self-sampling, with every device in every sum, would give the server
the amplified ε too; it is not built on this path.)

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
from typing import TYPE_CHECKING, Protocol

import numpy as np

from privrank.errors import ConfigError
from privrank.federated.aggregation import RoundSum, SumAggregator
from privrank.federated.cohorts import sample_cohort
from privrank.federated.flower.devices import NodeAnswer
from privrank.federated.flower.job import FlowerJob
from privrank.federated.flower.secure import (
    SecureReply,
    SecureRequest,
    SecureTask,
    graph_seed,
    secure_sum,
)
from privrank.federated.item_counts import noisy_counts
from privrank.federated.rounds import adapt_clipping_norm, open_round, step_plain, step_private
from privrank.federated.settings import RoundReport
from privrank.federated.simulator import check_private_min_clients, record_round
from privrank.federated.state import ServerState
from privrank.models._fedmf_rounds import FedMFConfig, FedMFServer
from privrank.privacy.distributed_dp_plan import (
    DistributedDPPlan,
    distributed_dp_guarantee,
    plan_distributed_dp,
)
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

if TYPE_CHECKING:
    from privrank.federated.secure_aggregation import SecureAggregation
    from privrank.privacy.crypto.secagg import SecAggConfig

__all__ = ["DeploymentResult", "DeviceTransport", "NodeAnswer", "run_deployment"]

log = logging.getLogger(__name__)


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
        config: FedMFConfig,
    ) -> Sequence[NodeAnswer]:
        """The round's answers of the nodes in ``assignment`` (node → its cohort devices) that
        answered in time; ``config`` is the objective with :math:`\\alpha_0` fixed, sent to the
        devices with :math:`H`."""
        ...

    def secure(
        self, stage: str, requests: Mapping[int, SecureRequest]
    ) -> Sequence[tuple[int, SecureReply]]:
        """One stage of a SecAgg+ exchange (:mod:`privrank.federated.flower.secure`): the
        replies of the nodes in ``requests`` that answered in time."""
        ...


@dataclass(frozen=True)
class DeploymentResult:
    """A finished deployment run.

    Attributes:
        state: The final server state (``item_factors``, ``item_counts``).
        plan: The DP-FedAvg plan (``None``: non-private or distributed DP).
        guarantee: The guarantee of the released rounds (``None``: non-private).
        seconds: Wall time of the rounds run.
        round_seconds: Wall time of each round run.
        distributed_plan: The distributed-DP plan (``None``: not distributed DP).
    """

    state: ServerState
    plan: FedAvgPlan | None
    guarantee: PrivacyGuarantee | None
    seconds: float
    round_seconds: list[float]
    distributed_plan: DistributedDPPlan | None = None


def _identity(job: FlowerJob, resolved: PrivacySpec | None) -> dict[str, object]:
    return {
        "model": job.model.model_dump(mode="json"),
        "settings": job.settings.model_dump(mode="json"),
        "privacy": None if resolved is None else resolved.model_dump(mode="json"),
        "train_fingerprint": job.data_fingerprint,
        "runtime": "flower",
        **(
            {"distributed_dp": True, "secret_sampling": job.secret_sampling}
            if job.distributed_dp
            else {}
        ),
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
    if resolved is not None and not job.distributed_dp:  # the simulator's rule
        check_private_min_clients(settings, population, secure=job.secure is not None)
    if resolved is not None and not job.ledger_key:
        raise ConfigError("a private federated run needs a ledger key to charge its rounds to")
    adaptive = None if resolved is None else settings.clipping_rule()
    plan = (
        None
        if resolved is None or job.distributed_dp
        else plan_dp_fedavg(
            resolved,
            population,
            settings.clients_per_round,
            settings.rounds,
            adaptive,
            settings.sampling,
        )
    )
    ledger = (
        None
        if resolved is None or job.ledger_key is None
        else RoundLedger(
            job.ledger_key, f"federated fedmf (flower) -> {job.run_dir}", job.ledger_url
        )
    )
    if job.distributed_dp:
        assert resolved is not None and ledger is not None
        with ledger:
            return _run_distributed(job, transport, progress, resolved, ledger)
    if ledger is None:
        return _run(job, transport, progress, resolved, plan, adaptive, None)
    with ledger:
        return _run(job, transport, progress, resolved, plan, adaptive, ledger)


def _server_state(
    job: FlowerJob,
    identity: dict[str, object],
    release_counts: Callable[[], np.ndarray],
    clipping_norm: float | None,
    ledger: RoundLedger | None,
) -> ServerState:
    """The run's server state: loaded from ``job.run_dir`` to resume, or a new one at round 0
    whose item counts are ``release_counts()`` (round 0's release, checked against the budget
    by the caller's function before anything is spent), saved before the first round."""
    run_dir = Path(job.run_dir)
    if ServerState.exists(run_dir):
        if not job.resume:
            raise ConfigError(
                f"{run_dir} holds the state of a federated run; pass --resume to continue it "
                "or choose another run directory"
            )
        return ServerState.load(run_dir, identity)
    if job.resume:
        raise ConfigError(f"--resume: {run_dir} holds no federated run state")
    counts = release_counts()
    state = ServerState(
        round=0,
        released_rounds=0,
        clipping_norm=clipping_norm,
        arrays={
            "item_factors": FedMFServer.initial_factors(job.model, job.n_items, job.settings.seed),
            "item_counts": counts.astype(np.float32),
        },
        identity=identity,
        spend_ids=[] if ledger is None else [s.spend_id for s in ledger.spends],
    )
    state.save(run_dir)
    return state


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

    def release_counts() -> np.ndarray:
        if ledger is not None and plan is not None:
            ledger.check_plan(plan.epsilon_after(plan.rounds), plan.delta)
        return _release_counts(job, transport, resolved, plan, ledger, nodes)

    clipping_norm = None if resolved is None else float(resolved.clipping_norm)
    state = _server_state(job, identity, release_counts, clipping_norm, ledger)
    # α₀ from the released counts (post-processing), as in the simulator.
    config = config.resolved(state.arrays["item_counts"], job.population)
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
            resolved, dim, config,
        )  # fmt: skip
        report = record_round(report, round_index, tick, state, run_dir, ledger, progress)
        seconds.append(report.seconds)
    guarantee = None
    if plan is not None and resolved is not None and mechanism is not None:
        guarantee = dp_fedavg_guarantee(
            plan,
            resolved,
            state.released_rounds,
            noise_scale=mechanism.noise_scale,
            secure_aggregation=job.secure is not None,
        )
    return DeploymentResult(state, plan, guarantee, time.perf_counter() - started, seconds)


def plan_of(job: FlowerJob, resolved: PrivacySpec) -> DistributedDPPlan:
    """The distributed-DP plan of a job: the simulator's (same arguments, no canaries)."""
    assert job.secure is not None
    d = job.model.factors
    population = job.population
    return plan_distributed_dp(
        resolved,
        population=population,
        n_items=job.n_items,
        dimension=job.n_items * d + d * d,
        rounds=job.settings.rounds,
        min_clients=job.settings.min_clients,
        max_clients=population,
        modulus_bits=job.secure.modulus_bits,
        sampling_rate=(
            min(job.settings.clients_per_round, population) / population
            if job.secret_sampling
            else None
        ),
        adaptive=job.settings.clipping_rule(),
        expected_cohort=min(job.settings.clients_per_round, population),
    )


def _run_distributed(
    job: FlowerJob,
    transport: DeviceTransport,
    progress: Callable[[RoundReport], None] | None,
    resolved: PrivacySpec,
    ledger: RoundLedger,
) -> DeploymentResult:
    """:func:`_run` under distributed DP (the module docstring)."""
    settings = job.settings
    config = job.model
    run_dir = Path(job.run_dir)
    identity = _identity(job, resolved)
    nodes = _enrolled(job, transport)
    ddp = plan_of(job, resolved)

    def release_counts() -> np.ndarray:
        ledger.check_plan(ddp.epsilon_after(ddp.total_rounds), ddp.delta)
        return _distributed_counts(job, transport, ddp, resolved, ledger, nodes)

    state = _server_state(job, identity, release_counts, float(resolved.clipping_norm), ledger)
    config = config.resolved(state.arrays["item_counts"], job.population)
    server = FedMFServer(
        config, job.population, state.arrays["item_counts"], settings.server_learning_rate
    )
    started = time.perf_counter()
    seconds = []
    dim = job.n_items * config.factors + config.factors**2
    for round_index in range(state.round + 1, settings.rounds + 1):
        tick = time.perf_counter()
        report = _distributed_round(
            round_index, job, transport, nodes, server, state, ddp, ledger, resolved, dim, config
        )
        report = record_round(report, round_index, tick, state, run_dir, ledger, progress)
        seconds.append(report.seconds)
    guarantee = distributed_dp_guarantee(
        ddp, resolved, state.released_rounds, noise_scale=ddp.rounds.noise_scale
    )
    return DeploymentResult(
        state, None, guarantee, time.perf_counter() - started, seconds, distributed_plan=ddp
    )


def _distributed_counts(
    job: FlowerJob,
    transport: DeviceTransport,
    ddp: DistributedDPPlan,
    spec: PrivacySpec,
    ledger: RoundLedger,
    nodes: Mapping[int, np.ndarray],
) -> np.ndarray:
    """Release 0 under distributed DP: round 0's cohort sends its at most ``c`` items, each
    device with its noise share, by SecAgg+ (the simulator's
    :func:`~privrank.federated.item_counts.release_counts_secure`); scaled by
    ``N / survivors``; charged with the run's δ.

    Raises:
        ConfigError: The exchange aborted or too few devices survived (nothing to train on).
    """
    from privrank.privacy.crypto.secagg import SecAggAbort

    assert job.secure is not None
    settings = job.settings
    cohort = sample_cohort(settings, job.population, 0)
    round_id = 0
    task = SecureTask.distributed(
        "counts", ddp.counts, _secagg_config(job.secure, round_id, settings.min_clients),
        count_bound=ddp.contribution_bound, noise_seed=spec.noise_seed,
    )  # fmt: skip
    with ledger.round(ddp.epsilon_after(0), ddp.delta, "item counts") as released:
        try:
            part, _ = secure_sum(
                transport.secure, _assignment(nodes, cohort), task, job.n_items, round_id,
                graph_seed(settings.seed, round_id, len(cohort)),
            )  # fmt: skip
        except SecAggAbort as exc:
            raise ConfigError(f"the item counts' secure round aborted: {exc}") from exc
        if part.accepted < settings.min_clients:
            raise ConfigError(
                f"the item counts' secure round had {part.accepted} device(s), fewer than "
                f"min_clients = {settings.min_clients}"
            )
        released[0] = True
    return np.asarray(part.total * (job.population / part.accepted), dtype=np.float64)


def _distributed_round(
    round_index: int,
    job: FlowerJob,
    transport: DeviceTransport,
    nodes: Mapping[int, np.ndarray],
    server: FedMFServer,
    state: ServerState,
    ddp: DistributedDPPlan,
    ledger: RoundLedger,
    spec: PrivacySpec,
    dim: int,
    config: FedMFConfig,
) -> RoundReport:
    """One distributed-DP round (the simulator's ``distributed_round`` over messages)."""
    from privrank.privacy.crypto.secagg import SecAggAbort

    assert job.secure is not None
    settings = job.settings
    current = state.clipping_norm
    adaptive = ddp.bits is not None and current is not None
    bound = (
        float(current)
        if ddp.bits is not None and current is not None
        else float(spec.clipping_norm)
    )
    opening = open_round(round_index, settings, job.population, state, ddp, bound)
    cohort, skipped = opening.cohort, opening.skipped
    if opening.too_few:
        return skipped
    task = SecureTask.distributed(
        "round", ddp.rounds, _secagg_config(job.secure, round_index, settings.min_clients),
        bound=bound, bits=ddp.bits, config=config, item_factors=state.arrays["item_factors"],
        noise_seed=spec.noise_seed,
    )  # fmt: skip
    seed = graph_seed(settings.seed, round_index, len(cohort))
    with ledger.round(opening.epsilon_cost, 0.0, f"round {round_index}") as released:
        try:
            total, _ = secure_sum(
                transport.secure, _assignment(nodes, cohort), task, dim, round_index, seed
            )
        except SecAggAbort as exc:
            log.warning("round %d: SecAgg+ aborted: %s", round_index, exc)
            return _reported(skipped, RoundSum(np.zeros(dim), 0, 0, {}),
                             {"secagg_abort": len(cohort)}, released=False)  # fmt: skip
        if total.accepted < settings.min_clients:
            return _reported(skipped, total, dict(total.refused), released=False)
        step_plain(total, settings, server, state, round_index)
        if adaptive and total.noisy_unclipped is not None:  # the simulator's step
            state.clipping_norm = adapt_clipping_norm(
                bound, total.noisy_unclipped / total.accepted, ddp
            )
        released[0] = True
    return opening.released(_reported(skipped, total, dict(total.refused), released=True))


def _release_counts(
    job: FlowerJob,
    transport: DeviceTransport,
    resolved: PrivacySpec | None,
    plan: FedAvgPlan | None,
    ledger: RoundLedger | None,
    nodes: Mapping[int, np.ndarray],
) -> np.ndarray:
    """The summed item counts (noised and charged with the run's δ in a private run)."""
    bound = None if plan is None else plan.contribution_bound
    if job.secure is not None:
        total_counts = _secure_counts(job, transport, bound, nodes)
        if resolved is None or plan is None or ledger is None:
            return total_counts
        return noisy_counts(total_counts, resolved, plan, ledger)
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


def _secure_counts(
    job: FlowerJob,
    transport: DeviceTransport,
    bound: int | None,
    nodes: Mapping[int, np.ndarray],
) -> np.ndarray:
    """Every device's 0/1 item vector (at most ``bound`` items) summed by SecAgg+ in groups of
    ``clients_per_round`` devices, as the simulator's
    :func:`~privrank.federated.item_counts.secure_counts_sum` (exact integers, ring scale 1).

    Raises:
        SecAggAbort: A group could not be unmasked (nothing is released).
    """
    assert job.secure is not None
    total = np.zeros(job.n_items)
    group = max(2, job.settings.clients_per_round)
    exact = job.secure.model_copy(update={"value_range": 1.0, "scale": 1.0, "dropout": 0.0})
    for number, start in enumerate(range(0, job.population, group)):
        members = np.arange(start, min(start + group, job.population))
        ring = exact.ring(len(members))
        round_id = 2**62 - 1 - number
        task = SecureTask(
            "counts", None, ring.modulus_bits, ring.clip, ring.scale,
            _secagg_config(exact, round_id, 1), count_bound=bound,
        )  # fmt: skip
        part, _ = secure_sum(
            transport.secure, _assignment(nodes, members), task, job.n_items, round_id,
            graph_seed(job.settings.seed, round_id, len(members)),
        )  # fmt: skip
        total += part.total
    return total


def _secagg_config(secure: SecureAggregation, round_id: int, min_survivors: int) -> SecAggConfig:
    from privrank.privacy.crypto.secagg import SecAggConfig

    return SecAggConfig(
        modulus_bits=secure.modulus_bits,
        degree_factor=secure.degree_factor,
        threshold_fraction=secure.threshold_fraction,
        min_survivors=min_survivors,
        round_id=round_id,
    )


def _secure_collect(
    job: FlowerJob,
    transport: DeviceTransport,
    round_index: int,
    assignment: Mapping[int, np.ndarray],
    cohort: np.ndarray,
    item_factors: np.ndarray,
    bound: float | None,
    dim: int,
    config: FedMFConfig,
) -> tuple[RoundSum, dict[str, int]]:
    """The round's sum by SecAgg+ (the simulator's ring: range the bound, or ``value_range``
    without one; scale from the cohort's size)."""
    from privrank.privacy.crypto.secagg import SecAggAbort

    assert job.secure is not None
    ring = job.secure.ring(len(cohort), bound)
    task = SecureTask(
        "round", bound, ring.modulus_bits, ring.clip, ring.scale,
        _secagg_config(job.secure, round_index, job.settings.min_clients),
        config=config, item_factors=item_factors,
    )  # fmt: skip
    seed = graph_seed(job.settings.seed, round_index, len(cohort))
    try:
        total, _ = secure_sum(transport.secure, assignment, task, dim, round_index, seed)
    except SecAggAbort as exc:
        log.warning("round %d: SecAgg+ aborted: %s", round_index, exc)
        return RoundSum(np.zeros(dim), 0, 0, {}), {"secagg_abort": len(cohort)}
    return total, dict(total.refused)


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
    config: FedMFConfig,
) -> RoundReport:
    """One round (the simulator's ``_round`` with the devices reached by messages)."""
    settings = job.settings
    opening = open_round(round_index, settings, job.population, state, plan, state.clipping_norm)
    cohort, skipped = opening.cohort, opening.skipped
    private = not (ledger is None or plan is None or mechanism is None or spec is None)
    secure = job.secure is not None
    if (not private or secure) and opening.too_few:
        return skipped  # a private plain round is released whatever its cohort (module doc)
    assignment = _assignment(nodes, cohort)

    def collect(bound: float | None) -> tuple[RoundSum, dict[str, int]]:
        if secure:
            return _secure_collect(
                job, transport, round_index, assignment, cohort, state.arrays["item_factors"],
                bound, dim, config,
            )  # fmt: skip
        answers = transport.updates(
            round_index, assignment, state.arrays["item_factors"], bound, config
        )
        total, dropped = _sum(answers, cohort, dim, bound, round_index)
        return total, {**total.refused, "dropped": dropped}

    if ledger is None or plan is None or mechanism is None or spec is None:
        total, refused = collect(None)
        if total.accepted < settings.min_clients:
            return _reported(skipped, total, refused, released=False)
        step_plain(total, settings, server, state, round_index)
        return _reported(skipped, total, refused, released=True)
    with ledger.round(opening.epsilon_cost, 0.0, f"round {round_index}") as released:
        total, refused = collect(mechanism.clipping_norm)
        if secure and total.accepted < settings.min_clients:
            # aborted: nothing released, the reservation is given back (module docstring)
            return _reported(skipped, total, refused, released=False)
        step_private(total, settings, server, state, plan, mechanism, spec, round_index)
        released[0] = True
    return opening.released(_reported(skipped, total, refused, released=True))


def _reported(
    skipped: RoundReport, total: RoundSum, refused: dict[str, int], *, released: bool
) -> RoundReport:
    return RoundReport(
        **{**skipped.__dict__, "accepted": total.accepted, "refused": refused, "released": released}
    )
