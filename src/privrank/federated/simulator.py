"""The vectorised simulator: many devices per round, the same device code, one process.

A round of :func:`simulate`:

1. **Sample** the cohort, deterministically from ``(seed, round)``: Poisson sampling (each of
   the :math:`N` devices with probability :math:`q = m/N`) or a fixed cohort of :math:`m`
   devices drawn without replacement (non-private runs only). A cohort smaller than
   ``min_clients`` ends the round: nothing is released or charged.
2. **Reserve** the round's ε increment in the ledger (private runs,
   :class:`~privrank.workflow.spend.RoundLedger`).
3. **Devices** run the client code (:class:`~privrank.models._fedmf_rounds.FedMFClient`) on
   batches of ``batch_size`` devices at once (a batch is a CSR of their histories: no Python
   object per device); a private run's devices clip their own update to the round's
   :math:`C` and report whether it was clipped.
4. **Aggregate**: every update is checked and the accepted ones summed
   (:class:`~privrank.federated.aggregation.SumAggregator`); a private run adds the DP-FedAvg
   noise to the sum (:class:`~privrank.privacy.dp_fedavg.DPFedAvgMechanism`). Fewer accepted
   updates than ``min_clients``: the round ends without a release and its reservation is given
   back.
5. **Server step** from the mean update (divided by the *expected* cohort in a private run, by
   the accepted updates otherwise); adaptive clipping moves :math:`C`; the round is committed.
6. **Record**: one JSON line in ``metrics.jsonl`` and the server state, both on disk before the
   next round, so an interrupted run resumes where it stopped.

Before the first round, the server releases the item counts (every device sends its, at most
:math:`c`, items; with noise in a private run): the cold-start popularity and the counts the
server step uses. The loss shown is the sampled devices' mean objective: a simulation
diagnostic, never released by the server (devices do not report it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.data._config import FrozenConfig
from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.federated.aggregation import RoundSum, SumAggregator
from privrank.federated.canaries import Canaries
from privrank.federated.secure_aggregation import SecAggAggregator, SecureAggregation
from privrank.federated.state import METRICS_FILE, ServerState
from privrank.models._fedmf_rounds import FedMFClient, FedMFServer, MFBroadcast
from privrank.models._query import Query
from privrank.models.fedmf import FedMF, FedMFConfig
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
from privrank.privacy.mechanism import PrivacyGuarantee, current_noise_scale
from privrank.privacy.spec import PrivacySpec
from privrank.privacy.updates import ClientUpdates, SparseUpdates
from privrank.workflow.spend import RoundLedger

__all__ = [
    "FederatedSettings",
    "RoundReport",
    "SimulationResult",
    "clip_on_device",
    "simulate",
]


class FederatedSettings(FrozenConfig):
    """How a federated run is driven (the model's own hyper-parameters are its config).

    Attributes:
        rounds: :math:`T`.
        clients_per_round: :math:`m`, the (expected) cohort size.
        sampling: ``poisson`` (each device with probability :math:`m/N`; required for DP) or
            ``fixed`` (exactly :math:`m` devices, without replacement).
        server_learning_rate: :math:`\\eta` of the server step.
        learning_rate_schedule: ``linear``: round :math:`t` of :math:`T` steps with
            :math:`\\eta (1 - (t-1)/T)` (the late rounds average the cohorts' sampling noise
            out); ``constant``: :math:`\\eta` throughout.
        batch_size: Devices simulated together in one vectorised batch.
        min_clients: A round with fewer sampled (or accepted) devices releases nothing.
        seed: Seed of the public initial model and of the cohort sampling.
        adaptive_clipping: Adapt :math:`C` to the ``target_quantile`` of the update norms
            (private runs; Andrew et al. 2021).
        target_quantile: :math:`\\gamma`.
        clipping_learning_rate: :math:`\\eta_C`.
    """

    rounds: int = Field(100, ge=1)
    clients_per_round: int = Field(100, ge=1)
    sampling: Literal["poisson", "fixed"] = "poisson"
    server_learning_rate: float = Field(0.5, gt=0, allow_inf_nan=False)
    learning_rate_schedule: Literal["linear", "constant"] = "linear"
    batch_size: int = Field(1024, ge=1)
    min_clients: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    adaptive_clipping: bool = True
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clipping_learning_rate: float = Field(0.2, gt=0, allow_inf_nan=False)


@dataclass(frozen=True)
class RoundReport:
    """What the progress display and the metrics log show of one round.

    Attributes:
        round: The round (1-based).
        rounds: :math:`T`.
        clients: Devices sampled.
        accepted: Updates accepted.
        refused: Refused updates per reason.
        released: Whether the round's model was released (and charged).
        loss: The sampled devices' mean objective (diagnostic; ``nan`` for no devices).
        epsilon: ε spent so far (``None``: non-private run).
        clipping_norm: :math:`C` used this round (``None``: non-private).
        seconds: Wall time of the round.
    """

    round: int
    rounds: int
    clients: int
    accepted: int
    refused: dict[str, int]
    released: bool
    loss: float
    epsilon: float | None
    clipping_norm: float | None
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """The metrics-log line."""
        return {
            "round": self.round,
            "clients": self.clients,
            "accepted": self.accepted,
            "refused": self.refused,
            "released": self.released,
            "loss": None if not np.isfinite(self.loss) else self.loss,
            "epsilon": self.epsilon,
            "clipping_norm": self.clipping_norm,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class SimulationResult:
    """A finished run.

    Attributes:
        model: The trained :class:`~privrank.models.fedmf.FedMF`.
        state: The final server state.
        plan: The DP-FedAvg plan (``None``: non-private).
        guarantee: The guarantee of the released rounds (``None``: non-private).
        seconds: Wall time of the rounds run by this call.
        rounds_run: Rounds run by this call (fewer than ``rounds`` after a resume).
    """

    model: FedMF
    state: ServerState
    plan: FedAvgPlan | None
    guarantee: PrivacyGuarantee | None
    seconds: float
    rounds_run: int
    distributed_plan: DistributedDPPlan | None = None


def _histories(data: Interactions) -> sp.csr_matrix:
    indptr, items = data.sequences()
    return Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64)).to_csr(data.n_items)


def _cohort(settings: FederatedSettings, population: int, round_index: int) -> np.ndarray:
    rng = np.random.default_rng([settings.seed, round_index])
    m = min(settings.clients_per_round, population)
    if settings.sampling == "fixed":
        return np.sort(rng.choice(population, size=m, replace=False))
    return np.flatnonzero(rng.random(population) < m / population)


def _learning_rate(settings: FederatedSettings, round_index: int) -> float:
    if settings.learning_rate_schedule == "constant":
        return settings.server_learning_rate
    return settings.server_learning_rate * (1.0 - (round_index - 1) / settings.rounds)


def _noise_rng(spec: PrivacySpec, round_index: int) -> np.random.Generator:
    if spec.noise_seed is not None:  # reproducible (tests only): a distinct stream per round
        return np.random.default_rng([spec.noise_seed, round_index])
    return spec.noise_generator()


def _append_line(path: Path, record: dict[str, object]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def simulate(
    config: FedMFConfig,
    train: Interactions,
    settings: FederatedSettings,
    *,
    run_dir: Path,
    spec: PrivacySpec | None = None,
    ledger: RoundLedger | None = None,
    resume: bool = False,
    progress: Callable[[RoundReport], None] | None = None,
    canaries: Canaries | None = None,
    secure: SecureAggregation | None = None,
    distributed_dp: bool = False,
) -> SimulationResult:
    """Run (or resume) federated training of fedmf on the devices of ``train``.

    Each user of ``train`` is one device holding only its own history.

    Args:
        config: The model's hyper-parameters.
        train: The training interactions (one device per user).
        settings: Rounds, cohort, sampling, learning rate, clipping.
        run_dir: Where the server state and the metrics log live.
        spec: A privacy spec for DP-FedAvg (``None``: non-private). Its ``clipping_norm`` is the
            initial :math:`C`, ``max_interactions_per_user`` bounds the released counts.
        ledger: The open round ledger a private run charges (required with ``spec``).
        resume: Continue the run saved in ``run_dir`` (which must be this run).
        progress: Called after every round.
        canaries: Canary devices of an empirical audit (:mod:`privrank.federated.audit`):
            each included canary is sampled like a device and sends its fixed direction at the
            round's bound; the released sums are then accumulated in the state
            (``released_sum``). Never in a production run.
        secure: Aggregate every round (and the item counts) by SecAgg+
            (:mod:`privrank.federated.secure_aggregation`): the server learns only sums.
            ``None``: the plain checked sum.
        distributed_dp: With ``spec`` and ``secure``: distributed DP instead of DP-FedAvg
            (:mod:`privrank.privacy.distributed_dp_plan`): each device adds discrete Gaussian
            noise before masking, the server adds none; fixed clipping at the spec's
            ``clipping_norm``; ``min_clients`` is the fewest survivors the accounting counts on.

    Raises:
        ConfigError: Inconsistent options, or a ``run_dir`` holding a state without ``resume``
            (or another run's state).
        PrivacyBudgetExceeded: The budget does not cover the whole run (before any round).
    """
    population = train.n_users
    if population < 1 or train.n_items < 1:
        raise ConfigError("federated training needs at least one device and one item")
    resolved = None if spec is None else spec.resolve(population)
    if resolved is not None and settings.sampling != "poisson":
        raise ConfigError(
            "DP-FedAvg is accounted for Poisson sampling only (--sampling poisson): a fixed "
            "cohort needs an accountant for sampling without replacement, which this version "
            "does not have"
        )
    if resolved is not None and ledger is None:
        raise ConfigError("a private federated run needs a ledger to charge its rounds to")
    if distributed_dp and (resolved is None or secure is None):
        raise ConfigError(
            "distributed DP needs a privacy spec (--epsilon) and secure aggregation "
            "(--aggregation secagg)"
        )
    if distributed_dp and settings.adaptive_clipping:
        raise ConfigError(
            "distributed DP clips at a fixed norm (adaptive clipping would need its own secure, "
            "noised sum of the clipping bits): pass --no-adaptive-clipping"
        )
    adaptive = None
    if resolved is not None and settings.adaptive_clipping:
        adaptive = AdaptiveClipping(
            target_quantile=settings.target_quantile,
            learning_rate=settings.clipping_learning_rate,
        )
    plan = (
        None
        if resolved is None or distributed_dp
        else plan_dp_fedavg(
            resolved, population, settings.clients_per_round, settings.rounds, adaptive
        )
    )
    ddp = None
    if distributed_dp and resolved is not None and secure is not None:
        d = config.factors
        ddp = plan_distributed_dp(
            resolved,
            population=population,
            n_items=train.n_items,
            dimension=train.n_items * d + d * d,
            rounds=settings.rounds,
            min_clients=settings.min_clients,
            max_clients=population + (0 if canaries is None else len(canaries.directions)),
            modulus_bits=secure.modulus_bits,
        )
    from privrank.data.fingerprint import fingerprint

    identity = {
        "model": config.model_dump(mode="json"),
        "settings": settings.model_dump(mode="json"),
        "privacy": None if resolved is None else resolved.model_dump(mode="json"),
        "train_fingerprint": fingerprint(train),
    }
    if secure is not None:
        identity["aggregation"] = {
            "secure": secure.model_dump(mode="json"),
            "distributed_dp": distributed_dp,
        }
    run_dir = Path(run_dir)
    histories = _histories(train)
    client = FedMFClient(config, train.n_items)
    if ServerState.exists(run_dir):
        if not resume:
            raise ConfigError(
                f"{run_dir} holds the state of a federated run; pass --resume to continue it "
                "or choose another run directory"
            )
        state = ServerState.load(run_dir, identity)
    else:
        if resume:
            raise ConfigError(f"--resume: {run_dir} holds no federated run state")
        if ledger is not None and plan is not None:
            ledger.check_plan(plan.epsilon_after(plan.rounds), plan.delta)
        if ledger is not None and ddp is not None:
            ledger.check_plan(ddp.epsilon_after(ddp.total_rounds), ddp.delta)
        if ddp is None or secure is None:
            counts = _release_counts(histories, resolved, plan, ledger, secure, settings)
        else:
            counts = _release_counts_secure(histories, settings, secure, resolved, ddp, ledger)
        state = ServerState(
            round=0,
            released_rounds=0,
            clipping_norm=None if resolved is None else float(resolved.clipping_norm),
            arrays={
                "item_factors": FedMFServer.initial_factors(config, train.n_items, settings.seed),
                "item_counts": counts.astype(np.float32),
            },
            identity=identity,
            spend_ids=[] if ledger is None else [s.spend_id for s in ledger.spends],
        )
        if canaries is not None:
            d = config.factors
            state.arrays["released_sum"] = np.zeros(train.n_items * d + d * d)
        state.save(run_dir)
    server = FedMFServer(
        config, population, state.arrays["item_counts"], settings.server_learning_rate
    )
    mechanism = None
    if plan is not None and state.clipping_norm is not None:
        mechanism = DPFedAvgMechanism(plan, state.clipping_norm, adaptive)
    started = time.perf_counter()
    first = state.round
    for round_index in range(state.round + 1, settings.rounds + 1):
        tick = time.perf_counter()
        if ddp is not None and ledger is not None and resolved is not None and secure:
            report = _round_distributed(
                round_index, settings, histories, client, server, state, ddp, secure, ledger,
                resolved, canaries,
            )  # fmt: skip
        else:
            report = _round(
                round_index,
                settings,
                histories,
                client,
                server,
                state,
                plan,
                mechanism,
                ledger,
                resolved,
                canaries,
                secure,
            )
        report = RoundReport(**{**report.__dict__, "seconds": time.perf_counter() - tick})
        state.round = round_index
        if ledger is not None:
            state.spend_ids = sorted(set(state.spend_ids) | {s.spend_id for s in ledger.spends})
        state.save(run_dir)
        _append_line(run_dir / METRICS_FILE, report.to_dict())
        if progress is not None:
            progress(report)
    guarantee = None
    if plan is not None and resolved is not None and mechanism is not None:
        guarantee = dp_fedavg_guarantee(
            plan, resolved, state.released_rounds, noise_scale=mechanism.noise_scale
        )
    if ddp is not None and resolved is not None:
        guarantee = distributed_dp_guarantee(
            ddp, resolved, state.released_rounds, noise_scale=ddp.rounds.noise_scale
        )
    # The cold-start popularity: the released counts clipped at 0 (post-processing).
    popularity = np.maximum(state.arrays["item_counts"], 0.0)
    model = FedMF.assemble(config, train, state.arrays["item_factors"], popularity, guarantee)
    return SimulationResult(
        model=model,
        state=state,
        plan=plan,
        guarantee=guarantee,
        seconds=time.perf_counter() - started,
        rounds_run=settings.rounds - first,
        distributed_plan=ddp,
    )


def _release_counts(
    histories: sp.csr_matrix,
    spec: PrivacySpec | None,
    plan: FedAvgPlan | None,
    ledger: RoundLedger | None,
    secure: SecureAggregation | None = None,
    settings: FederatedSettings | None = None,
) -> np.ndarray:
    """The item counts every device sends once (at most ``c`` items each under DP), summed
    (by SecAgg+ with ``secure``); with Gaussian noise (σ = multiplier · √c) added by the server
    to the sum in a private run, charged to the ledger."""
    n_items = histories.shape[1]
    if secure is not None and settings is not None:
        bounded = histories if plan is None else _bounded(histories, plan.contribution_bound)
        total = _secure_counts_sum(bounded, settings, secure)
        if spec is None or plan is None or ledger is None:
            return total
        return _noisy_counts(total, spec, plan, ledger)
    if spec is None or plan is None or ledger is None:
        rows = SparseUpdates(histories)
        aggregator = SumAggregator(n_items, None)
        aggregator.add(rows)
        return aggregator.finish().total
    bound = plan.contribution_bound
    kept = _bounded(histories, bound)
    aggregator = SumAggregator(n_items, float(np.sqrt(bound)))
    aggregator.add(SparseUpdates(kept))
    return _noisy_counts(aggregator.finish().total, spec, plan, ledger)


def _noisy_counts(
    total: np.ndarray, spec: PrivacySpec, plan: FedAvgPlan, ledger: RoundLedger
) -> np.ndarray:
    """DP-FedAvg's release of the summed counts: Gaussian noise, charged with the run's δ."""
    n_items = total.shape[0]
    bound = plan.contribution_bound
    std = current_noise_scale() * plan.popularity_noise_multiplier * float(np.sqrt(bound))
    with ledger.round(plan.epsilon_after(0), plan.delta, "item counts") as released:
        noisy = total + (_noise_rng(spec, 0).normal(0.0, std, n_items) if std > 0 else 0.0)
        released[0] = True
    return np.asarray(noisy, dtype=np.float64)


def _bounded(histories: sp.csr_matrix, bound: int) -> sp.csr_matrix:
    """Each device keeps at most ``bound`` of its items (its first ones in item order)."""
    lengths = np.diff(histories.indptr)
    positions = np.arange(histories.nnz) - np.repeat(histories.indptr[:-1], lengths)
    keep = positions < bound
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, bound))])
    return sp.csr_matrix(
        (histories.data[keep], histories.indices[keep], indptr), shape=histories.shape
    )


def _round(
    round_index: int,
    settings: FederatedSettings,
    histories: sp.csr_matrix,
    client: FedMFClient,
    server: FedMFServer,
    state: ServerState,
    plan: FedAvgPlan | None,
    mechanism: DPFedAvgMechanism | None,
    ledger: RoundLedger | None,
    spec: PrivacySpec | None,
    canaries: Canaries | None = None,
    secure: SecureAggregation | None = None,
) -> RoundReport:
    cohort = _cohort(settings, histories.shape[0], round_index)
    epsilon_before = None if plan is None else plan.epsilon_after(state.released_rounds)
    skipped = RoundReport(
        round_index,
        settings.rounds,
        len(cohort),
        0,
        {},
        False,
        float("nan"),
        epsilon_before,
        state.clipping_norm,
        0.0,
    )
    if len(cohort) < settings.min_clients:
        return skipped
    if ledger is None or plan is None or mechanism is None or spec is None:
        total, losses = _aggregate(
            cohort, settings, histories, client, state, None, round_index, canaries, secure
        )
        if total.accepted < settings.min_clients:
            return _report(skipped, total, losses, released=False)
        if canaries is not None:
            state.arrays["released_sum"] += total.total
        mean = total.total / total.accepted
        state.arrays["item_factors"] = server.step(
            state.arrays["item_factors"], mean, _learning_rate(settings, round_index)
        )
        state.released_rounds += 1
        return _report(skipped, total, losses, released=True)
    epsilon_after = plan.epsilon_after(state.released_rounds + 1)
    # δ was charged with the first release (the item counts); rounds add only ε.
    with ledger.round(
        epsilon_after - (epsilon_before or 0.0), 0.0, f"round {round_index}"
    ) as released:
        total, losses = _aggregate(
            cohort,
            settings,
            histories,
            client,
            state,
            mechanism.clipping_norm,
            round_index,
            canaries,
            secure,
        )
        if total.accepted < settings.min_clients:
            return _report(skipped, total, losses, released=False)
        rng = _noise_rng(spec, round_index)
        noisy = mechanism.add_noise(total.total, rng)
        if canaries is not None:
            state.arrays["released_sum"] += noisy
        mean = noisy / plan.expected_cohort
        state.arrays["item_factors"] = server.step(
            state.arrays["item_factors"], mean, _learning_rate(settings, round_index)
        )
        if mechanism.adaptive is not None:
            fraction = mechanism.noisy_unclipped_fraction(total.unclipped, rng)
            state.clipping_norm = mechanism.adapt(fraction)
        state.released_rounds += 1
        released[0] = True
    report = _report(skipped, total, losses, released=True)
    return RoundReport(**{**report.__dict__, "epsilon": epsilon_after})


def _report(
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


def _aggregate(
    cohort: np.ndarray,
    settings: FederatedSettings,
    histories: sp.csr_matrix,
    client: FedMFClient,
    state: ServerState,
    bound: float | None,
    round_index: int,
    canaries: Canaries | None,
    secure: SecureAggregation | None = None,
    aggregator: SumAggregator | SecAggAggregator | None = None,
) -> tuple[RoundSum, np.ndarray]:
    """Run the cohort's devices batch by batch and sum their checked updates (securely with
    ``secure``, or through the given ``aggregator``)."""
    broadcast = MFBroadcast.of(state.arrays["item_factors"])
    n_items, d = broadcast.item_factors.shape
    if aggregator is None and secure is not None:
        extra = 0 if canaries is None else len(canaries.directions)
        aggregator = SecAggAggregator(
            n_items * d + d * d,
            bound,
            secure,
            max_clients=len(cohort) + extra,
            round_index=round_index,
            seed=settings.seed,
            min_survivors=settings.min_clients,
        )
    if aggregator is None:
        aggregator = SumAggregator(n_items * d + d * d, bound)
    losses = []
    for start in range(0, len(cohort), settings.batch_size):
        devices = cohort[start : start + settings.batch_size]
        computed, batch_losses = client.local_update(histories[devices], broadcast)
        sent: ClientUpdates = computed
        unclipped = None
        if bound is not None:
            sent, unclipped = clip_on_device(computed, bound)
        aggregator.add(sent, unclipped)
        losses.append(batch_losses)
    if canaries is not None:
        rate = min(settings.clients_per_round, histories.shape[0]) / histories.shape[0]
        chosen = canaries.sampled(round_index, rate)
        if len(chosen):
            scale = 1.0 if bound is None else bound
            aggregator.add(canaries.updates(chosen, scale), np.ones(len(chosen), dtype=bool))
    joined = np.concatenate(losses) if losses else np.zeros(0)
    if isinstance(aggregator, SecAggAggregator):
        from privrank.privacy.crypto.secagg import SecAggAbort

        try:
            return aggregator.finish(), joined
        except SecAggAbort:  # nothing unmasked: the round releases nothing and is not charged
            return RoundSum(np.zeros(aggregator.dim), refused={"secagg_abort": 1}), joined
    return aggregator.finish(), joined


def clip_on_device(updates: ClientUpdates, bound: float) -> tuple[ClientUpdates, np.ndarray]:
    """Each device scales its update to L2 norm at most ``bound`` and reports whether it was
    already within it (the bit of adaptive clipping).

    Returns:
        ``(clipped updates, unclipped bits)``.
    """
    norms = updates.norms()
    unclipped = norms <= bound
    with np.errstate(divide="ignore", invalid="ignore"):
        factors = np.where(unclipped, 1.0, bound / norms)
    factors = np.where(np.isfinite(factors), factors, 1.0)  # a non-finite update stays so
    return updates.scaled(factors), unclipped


def _secure_counts_sum(
    histories: sp.csr_matrix, settings: FederatedSettings, secure: SecureAggregation
) -> np.ndarray:
    """Every device's 0/1 item vector summed by SecAgg+, in groups of ``clients_per_round``
    devices (one protocol run per group, no simulated dropout: the counts are collected once,
    before training); integers, so the sum is exact. A group that aborts
    raises :class:`~privrank.privacy.crypto.secagg.SecAggAbort` (nothing is released)."""
    population, n_items = histories.shape
    total = np.zeros(n_items)
    group = max(2, settings.clients_per_round)
    exact = secure.model_copy(update={"value_range": 1.0, "scale": 1.0, "dropout": 0.0})
    for number, start in enumerate(range(0, population, group)):
        members = np.arange(start, min(start + group, population))
        aggregator = SecAggAggregator(
            n_items, None, exact, max_clients=len(members), round_index=2**62 - 1 - number,
            seed=settings.seed,
        )  # fmt: skip
        aggregator.add(SparseUpdates(histories[members]))
        total += aggregator.finish().total
    return total


def _release_counts_secure(
    histories: sp.csr_matrix,
    settings: FederatedSettings,
    secure: SecureAggregation,
    spec: PrivacySpec | None,
    ddp: DistributedDPPlan | None,
    ledger: RoundLedger | None,
) -> np.ndarray:
    """The item counts under distributed DP, through SecAgg+: the
    devices of the first cohort (Poisson, round 0) send their at most ``c`` items with discrete
    Gaussian noise (release 0 of the plan, charged with the run's δ); the server scales the sum
    by ``N / survivors``.

    Raises:
        ConfigError: Too few devices survived the counts' round (nothing can be trained).
    """
    from privrank.privacy.crypto.secagg import SecAggAbort

    population, n_items = histories.shape
    if ddp is None or spec is None or ledger is None:
        raise ConfigError("the distributed-DP counts need a plan, a spec and a ledger")
    cohort = _cohort(settings, population, 0)
    kept = _bounded(histories[cohort], ddp.contribution_bound)
    aggregator = SecAggAggregator(
        n_items,
        float(np.sqrt(ddp.contribution_bound)),
        secure,
        max_clients=population,
        round_index=0,
        seed=settings.seed,
        min_survivors=settings.min_clients,
        mechanism=ddp.counts,
        noise_rng=_noise_rng(spec, 0),
    )
    with ledger.round(ddp.epsilon_after(0), ddp.delta, "item counts") as released:
        aggregator.add(SparseUpdates(kept))
        try:
            part = aggregator.finish()
        except SecAggAbort as exc:
            raise ConfigError(f"the item counts' secure round aborted: {exc}") from exc
        if part.accepted < settings.min_clients:
            raise ConfigError(
                f"the item counts' secure round had {part.accepted} device(s), fewer than "
                f"min_clients = {settings.min_clients}"
            )
        released[0] = True
    return np.asarray(part.total * (population / part.accepted), dtype=np.float64)


def _round_distributed(
    round_index: int,
    settings: FederatedSettings,
    histories: sp.csr_matrix,
    client: FedMFClient,
    server: FedMFServer,
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

    cohort = _cohort(settings, histories.shape[0], round_index)
    epsilon_before = ddp.epsilon_after(state.released_rounds)
    bound = float(spec.clipping_norm)
    skipped = RoundReport(
        round_index, settings.rounds, len(cohort), 0, {}, False, float("nan"), epsilon_before,
        bound, 0.0,
    )  # fmt: skip
    if len(cohort) < settings.min_clients:
        return skipped
    epsilon_after = ddp.epsilon_after(state.released_rounds + 1)
    n_items, d = state.arrays["item_factors"].shape
    extra = 0 if canaries is None else len(canaries.directions)
    aggregator = SecAggAggregator(
        n_items * d + d * d,
        bound,
        secure,
        max_clients=histories.shape[0] + extra,
        round_index=round_index,
        seed=settings.seed,
        min_survivors=settings.min_clients,
        mechanism=ddp.rounds,
        noise_rng=_noise_rng(spec, round_index),
    )
    with ledger.round(epsilon_after - epsilon_before, 0.0, f"round {round_index}") as released:
        try:
            total, losses = _aggregate(
                cohort, settings, histories, client, state, bound, round_index, canaries,
                aggregator=aggregator,
            )  # fmt: skip
        except SecAggAbort:
            return RoundReport(**{**skipped.__dict__, "refused": {"secagg_abort": len(cohort)}})
        if total.accepted < settings.min_clients:
            return _report(skipped, total, losses, released=False)
        if canaries is not None:
            state.arrays["released_sum"] += total.total
        state.arrays["item_factors"] = server.step(
            state.arrays["item_factors"],
            total.total / total.accepted,
            _learning_rate(settings, round_index),
        )
        state.released_rounds += 1
        released[0] = True
    report = _report(skipped, total, losses, released=True)
    return RoundReport(**{**report.__dict__, "epsilon": epsilon_after})
