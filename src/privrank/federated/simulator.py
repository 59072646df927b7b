"""The vectorised simulator: many devices per round, the same device code, one process.

A round of :func:`simulate`:

1. **Sample** the cohort, deterministically from ``(seed, round)``: Poisson sampling (each of
   the :math:`N` devices with probability :math:`q = m/N`) or a fixed cohort of :math:`m`
   devices drawn without replacement (accounted under replace-one adjacency in a private run,
   :mod:`privrank.privacy.dp_fedavg`). A non-private cohort smaller than ``min_clients`` ends
   the round: nothing is released. A private round with the plain aggregation is released
   whatever its cohort; central DP over SecAgg+ needs fixed cohorts, so that whether its round
   aborts depends on the seed alone (see :mod:`privrank.federated.rounds` for why).
2. **Reserve** the round's ε increment in the ledger (private runs,
   :class:`~privrank.workflow.spend.RoundLedger`).
3. **Devices** run the client code (:class:`~privrank.models._fedmf_rounds.FedMFClient`) on
   batches of ``batch_size`` devices at once (a batch is a CSR of their histories: no Python
   object per device); a private run's devices clip their own update to the round's
   :math:`C` and report whether it was clipped.
4. **Aggregate**: every update is checked and the accepted ones summed
   (:class:`~privrank.federated.aggregation.SumAggregator`); a private run adds the DP-FedAvg
   noise to the sum (:class:`~privrank.privacy.dp_fedavg.DPFedAvgMechanism`). Fewer accepted
   updates than ``min_clients`` (non-private, or SecAgg+): the round ends without a release and
   its reservation is given back.
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
from pathlib import Path

import numpy as np

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.federated.canaries import Canaries
from privrank.federated.clients import ClientRunner, clip_on_device
from privrank.federated.cohorts import device_histories
from privrank.federated.item_counts import release_counts, release_counts_secure
from privrank.federated.models import (
    FederatedConfig,
    assemble_model,
    device_code,
    initial_arrays,
    resolved_config,
    server_code,
)
from privrank.federated.rounds import central_round, distributed_round
from privrank.federated.secure_aggregation import SecureAggregation
from privrank.federated.settings import FederatedSettings, RoundReport, SimulationResult
from privrank.federated.state import METRICS_FILE, ServerState
from privrank.privacy.distributed_dp_plan import distributed_dp_guarantee, plan_distributed_dp
from privrank.privacy.dp_fedavg import (
    DPFedAvgMechanism,
    dp_fedavg_guarantee,
    plan_dp_fedavg,
)
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.spend import RoundLedger

__all__ = [
    "FederatedSettings",
    "RoundReport",
    "SimulationResult",
    "clip_on_device",
    "simulate",
]

#: The devices' histories (kept under its former name for the tests that build them).
_histories = device_histories


def append_line(path: Path, record: dict[str, object]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def record_round(
    report: RoundReport,
    round_index: int,
    started: float,
    state: ServerState,
    run_dir: Path,
    ledger: RoundLedger | None,
    progress: Callable[[RoundReport], None] | None,
) -> RoundReport:
    """Close round ``round_index``, as the simulator and the Flower server both do: stamp its
    seconds (since ``started``, a ``time.perf_counter()``), advance and save the server state
    with the ledger's spend ids, append the report to the metrics log and tell ``progress``."""
    report = RoundReport(**{**report.__dict__, "seconds": time.perf_counter() - started})
    state.round = round_index
    if ledger is not None:
        state.spend_ids = sorted(set(state.spend_ids) | {s.spend_id for s in ledger.spends})
    state.save(run_dir)
    append_line(run_dir / METRICS_FILE, report.to_dict())
    if progress is not None:
        progress(report)
    return report


def simulate(
    config: FederatedConfig,
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
    secret_sampling: bool = False,
    runner: ClientRunner | None = None,
) -> SimulationResult:
    """Run (or resume) federated training of fedmf or Mult-VAE on the devices of ``train``.

    Each user of ``train`` is one device holding only its own history.

    Args:
        config: The model's hyper-parameters: a
            :class:`~privrank.models.fedmf.FedMFConfig` (Federated Reconstruction) or a
            :class:`~privrank.models._fedvae_rounds.FedVAEConfig` (FedAvg of the Mult-VAE).
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
            noise before masking, the server adds none; ``min_clients`` is the fewest survivors
            the accounting counts on. The clipping norm starts at the spec's
            ``clipping_norm``; with ``settings.adaptive_clipping`` it adapts from the noisy
            SecAgg+ sum of the devices' clipping bits (accounted with the updates:
            :mod:`privrank.privacy.distributed_dp_plan`), otherwise it stays fixed.
        secret_sampling: With ``distributed_dp`` and Poisson sampling: account the rounds with
            amplification by secret sampling at ``q = m/N`` (see
            :mod:`privrank.privacy.distributed_dp_plan` for who is trusted for the secrecy of
            the sample; in a deployment the sampler's coins must be secret, whereas the
            simulator draws them from ``settings.seed``).
        runner: Where the devices' batches run (:class:`~privrank.federated.clients.ClientRunner`;
            default: in this process; ``privrank.distributed.ray_federated.RayClientRunner``:
            Ray tasks). The model does not depend on it (the same batch sums, added in the same
            order). Secure aggregation runs in this process only.

    Raises:
        ConfigError: Inconsistent options, or a ``run_dir`` holding a state without ``resume``
            (or another run's state).
        PrivacyBudgetExceeded: The budget does not cover the whole run (before any round).
    """
    population = train.n_users
    if population < 1 or train.n_items < 1:
        raise ConfigError("federated training needs at least one device and one item")
    resolved = None if spec is None else spec.resolve(population)
    # The option asked for by name is checked first, so its refusal names it.
    if secret_sampling and (not distributed_dp or settings.sampling != "poisson"):
        raise ConfigError(
            "secret sampling amplifies distributed DP under Poisson sampling: it needs "
            "--distributed-dp and --sampling poisson"
        )
    if resolved is not None and not distributed_dp:
        check_private_min_clients(settings, population, secure=secure is not None)
    if resolved is not None and ledger is None:
        raise ConfigError("a private federated run needs a ledger to charge its rounds to")
    if distributed_dp and (resolved is None or secure is None):
        raise ConfigError(
            "distributed DP needs a privacy spec (--epsilon) and secure aggregation "
            "(--aggregation secagg)"
        )
    if runner is not None and runner.name != "local" and secure is not None:
        raise ConfigError(
            f"--engine {runner.name} runs the devices of the plain aggregation; secure "
            "aggregation (--aggregation secagg) runs in this process: use --engine local"
        )
    adaptive = None if resolved is None else settings.clipping_rule()
    plan = (
        None
        if resolved is None or distributed_dp
        else plan_dp_fedavg(
            resolved,
            population,
            settings.clients_per_round,
            settings.rounds,
            adaptive,
            settings.sampling,
        )
    )
    client = device_code(config, train.n_items, settings.seed)
    ddp = None
    if distributed_dp and resolved is not None and secure is not None:
        ddp = plan_distributed_dp(
            resolved,
            population=population,
            n_items=train.n_items,
            dimension=client.update_dim,
            rounds=settings.rounds,
            min_clients=settings.min_clients,
            max_clients=population + (0 if canaries is None else len(canaries.directions)),
            modulus_bits=secure.modulus_bits,
            sampling_rate=(
                min(settings.clients_per_round, population) / population
                if secret_sampling
                else None
            ),
            adaptive=adaptive,
            expected_cohort=min(settings.clients_per_round, population),
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
            **({"secret_sampling": True} if secret_sampling else {}),
        }
    run_dir = Path(run_dir)
    histories = device_histories(train)
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
            counts = release_counts(histories, resolved, plan, ledger, secure, settings)
        else:
            counts = release_counts_secure(histories, settings, secure, resolved, ddp, ledger)
        state = ServerState(
            round=0,
            released_rounds=0,
            clipping_norm=None if resolved is None else float(resolved.clipping_norm),
            arrays={
                **initial_arrays(config, train.n_items, settings.seed),
                "item_counts": counts.astype(np.float32),
            },
            identity=identity,
            spend_ids=[] if ledger is None else [s.spend_id for s in ledger.spends],
        )
        if canaries is not None:
            state.arrays["released_sum"] = np.zeros(client.update_dim)
        state.save(run_dir)
    # fedmf's α₀ from the released counts (post-processing): the devices get it with H.
    fixed = resolved_config(config, state.arrays["item_counts"], population)
    if fixed is not config:
        config = fixed
        client = device_code(config, train.n_items, settings.seed)
    server = server_code(config, population, state.arrays["item_counts"], settings)
    mechanism = None
    if plan is not None and state.clipping_norm is not None:
        mechanism = DPFedAvgMechanism(plan, state.clipping_norm, adaptive)
    started = time.perf_counter()
    first = state.round
    for round_index in range(state.round + 1, settings.rounds + 1):
        tick = time.perf_counter()
        if ddp is not None and ledger is not None and resolved is not None and secure:
            report = distributed_round(
                round_index, settings, histories, client, server, state, ddp, secure, ledger,
                resolved, canaries,
            )  # fmt: skip
        else:
            report = central_round(
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
                runner,
            )
        report = record_round(report, round_index, tick, state, run_dir, ledger, progress)
    guarantee = None
    if plan is not None and resolved is not None and mechanism is not None:
        guarantee = dp_fedavg_guarantee(
            plan,
            resolved,
            state.released_rounds,
            noise_scale=mechanism.noise_scale,
            secure_aggregation=secure is not None,
        )
    if ddp is not None and resolved is not None:
        guarantee = distributed_dp_guarantee(
            ddp, resolved, state.released_rounds, noise_scale=ddp.rounds.noise_scale
        )
    # The cold-start popularity: the released counts clipped at 0 (post-processing).
    popularity = np.maximum(state.arrays["item_counts"], 0.0)
    model = assemble_model(config, train, state.arrays, popularity, guarantee)
    return SimulationResult(
        model=model,
        state=state,
        plan=plan,
        guarantee=guarantee,
        seconds=time.perf_counter() - started,
        rounds_run=settings.rounds - first,
        distributed_plan=ddp,
    )


def check_private_min_clients(
    settings: FederatedSettings, population: int, *, secure: bool = False
) -> None:
    """A private round with the plain aggregation is always released, and central DP over
    SecAgg+ needs fixed cohorts (:mod:`privrank.federated.rounds`): ``min_clients`` may not make
    a release depend on the cohort.

    Raises:
        ConfigError: ``min_clients`` > 1 with Poisson sampling, Poisson sampling with SecAgg+,
            or ``min_clients`` above a fixed cohort.
    """
    cohort = min(settings.clients_per_round, population)
    if secure and settings.sampling == "poisson":
        raise ConfigError(
            "central DP-FedAvg over --aggregation secagg needs --sampling fixed: SecAgg+ aborts "
            "a round with fewer than --min-clients survivors, and with Poisson sampling whether "
            "that happens depends on who is in the data (a release no accountant here covers); "
            "use --sampling fixed, or --distributed-dp"
        )
    if settings.sampling == "poisson" and settings.min_clients > 1:
        raise ConfigError(
            f"--min-clients {settings.min_clients}: a DP-FedAvg round is released whatever the "
            "size of its Poisson cohort (skipping small cohorts would reveal, without noise, "
            "who was sampled); use --min-clients 1, or --sampling fixed"
        )
    if settings.sampling == "fixed" and settings.min_clients > cohort:
        raise ConfigError(
            f"--min-clients {settings.min_clients} exceeds the fixed cohort of {cohort} devices: "
            "no round could be released"
        )
