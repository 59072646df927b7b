"""``privrank federated partition | serve | device``: fedmf on Flower's deployment runtime.

These commands run in the Flower environment (``make flower-env``, then
``.venv-flower/bin/privrank …``): flwr's pins clash with the main environment's.

1. ``privrank federated partition --data ml100k-holdout --nodes 10 --out devices/`` writes one
   node file per SuperNode (the devices' histories; a device's file stays on the device).
2. ``privrank federated device --node-file devices/node-0.npz --superlink 127.0.0.1:9091
   --local-port 9094`` starts one SuperNode (a device, or a few) and keeps it running.
3. ``privrank federated serve --data ml100k-holdout --out runs/fedmf-flower`` starts the
   SuperLink, waits for the SuperNodes, runs the rounds (the ServerApp) and writes an ordinary
   trained-model directory that ``privrank evaluate --model`` reads. ``--local-devices
   devices/`` also starts one SuperNode per node file on this machine (a loopback federation).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from privrank.cli._console import make_console
from privrank.cli._federated_options import (
    Accountant,
    AdaptiveClipping,
    BudgetKey,
    ClientsPerRound,
    ClippingNorm,
    Data,
    Delta,
    Epsilon,
    LedgerUrl,
    LrSchedule,
    MaxPerUser,
    Out,
    Resume,
    Rounds,
    Seed,
    ServerLr,
)
from privrank.cli._options import ModelParams, NoiseSeed
from privrank.cli.federated import federated_app
from privrank.cli.train import (
    _check_out,
    _privacy_spec,
    _record,
    _training_rows,
    parse_params,
    resolve_training_data,
)
from privrank.errors import ConfigError

__all__ = ["device_command", "partition_command", "serve_command"]

# The Flower path runs fedmf's device and server code; the simulator also runs mult-vae.
FLOWER_MODELS = ("fedmf",)
FlowerModel = Annotated[str, typer.Option(help="The federated model: fedmf.")]

Host = Annotated[str, typer.Option(help="Address the SuperLink listens on (loopback by default).")]
Port = Annotated[
    int,
    typer.Option(help="SuperLink port (its APIs over HTTP); local SuperNodes use PORT+1.."),
]


def _federated_train(data: str, model: str, param: list[str] | None):  # type: ignore[no-untyped-def]
    from privrank.models import FedMF, create_model

    if model not in FLOWER_MODELS:
        raise ConfigError(
            f"--model {model!r}: federated training on Flower supports "
            f"{', '.join(FLOWER_MODELS)} (the simulator, `federated train`, also runs mult-vae)"
        )
    recommender = create_model(model, parse_params(param))
    if not isinstance(recommender, FedMF):  # pragma: no cover - FLOWER_MODELS are FedMF
        raise ConfigError(f"--model {model!r} is not a federated model")
    resolved = resolve_training_data(data)
    if resolved.prepared is None:
        raise ConfigError(f"--data {data}: give a protocol or a saved split (to evaluate on)")
    train, mode = _training_rows(resolved, recommender)
    return recommender, resolved, train, mode


@federated_app.command("partition")
def partition_command(
    data: Data,
    nodes: Annotated[int, typer.Option(help="SuperNodes (node files); devices dealt round-robin.")],
    out: Annotated[Path, typer.Option(help="Folder of the node files and manifest.json.")],
    model: FlowerModel = "fedmf",
) -> None:
    """Write one node file per SuperNode: the histories of the devices it holds."""
    from privrank.federated.flower.devices import partition

    _, _, train, _ = _federated_train(data, model, None)
    manifest = partition(train, nodes, out)
    make_console().print(
        f"{manifest['devices']:,} devices on {nodes} node files in {out} "
        f"({manifest['items']:,} items)",
    )


@federated_app.command("device")
def device_command(
    node_file: Annotated[Path, typer.Option(help="The node file of the devices this node holds.")],
    superlink: Annotated[
        str, typer.Option(help="The SuperLink's Fleet API HOST:PORT.")
    ] = "127.0.0.1:9091",
    local_port: Annotated[
        int, typer.Option(help="Local port of the SuperNode's runtime API (one per node).")
    ] = 9094,
    flwr_home: Annotated[Path | None, typer.Option(help="Flower's state folder.")] = None,
) -> None:
    """Start one SuperNode (``flower-supernode --insecure``) and run until it stops."""
    from privrank.federated.flower.launch import start_supernode, stop

    home = flwr_home if flwr_home is not None else node_file.parent / ".flwr" / node_file.stem
    log = home / "supernode.log"
    process = start_supernode(node_file, superlink, local_port, home, log)
    make_console().print(f"SuperNode for {node_file} started (pid {process.pid}); log {log}")
    try:
        code = process.wait()
    except KeyboardInterrupt:
        stop(process)
        code = 0
    if code:
        raise ConfigError(f"flower-supernode exited with status {code}; see {log}")


@federated_app.command("serve")
def serve_command(
    data: Data,
    out: Out,
    model: FlowerModel = "fedmf",
    param: ModelParams = None,
    rounds: Rounds = 100,
    clients_per_round: ClientsPerRound = 100,
    sampling: Annotated[str, typer.Option(help="Cohort sampling: poisson or fixed.")] = "poisson",
    server_lr: ServerLr = 0.5,
    lr_schedule: LrSchedule = "linear",
    min_clients: Annotated[
        int,
        typer.Option(
            help="Without DP: a round with fewer devices releases nothing. With DP it must be 1 "
            "(every private round is released and charged)."
        ),
    ] = 1,
    seed: Seed = 0,
    epsilon: Epsilon = None,
    delta: Delta = None,
    max_per_user: MaxPerUser = None,
    clipping_norm: ClippingNorm = None,
    adaptive_clipping: AdaptiveClipping = True,
    accountant: Accountant = None,
    noise_seed: NoiseSeed = None,
    budget_key: BudgetKey = None,
    ledger: LedgerUrl = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Server state, metrics and logs (default OUT.run).")
    ] = None,
    resume: Resume = False,
    host: Host = "127.0.0.1",
    port: Port = 9091,
    min_nodes: Annotated[int, typer.Option(help="SuperNodes to wait for before enrolment.")] = 1,
    enrol_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the SuperNodes.")
    ] = 120.0,
    round_timeout: Annotated[
        float, typer.Option(help="Seconds a round waits for answers; later devices dropped out.")
    ] = 60.0,
    local_devices: Annotated[
        Path | None,
        typer.Option(help="Also start one local SuperNode per node file of this folder."),
    ] = None,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            help="The most messages of one exchange outstanding at once: it bounds how many "
            "ClientApp processes (one per message in flwr 1.42) the SuperNodes run together, "
            "not the cohort. Default: 4 per usable core with --local-devices (all SuperNodes "
            "on this machine), no cap otherwise; 0: no cap."
        ),
    ] = None,
    shared_superexec: Annotated[
        bool,
        typer.Option(
            help="With --local-devices: one SuperExec process launches the ClientApps of all "
            "local SuperNodes (started with --isolation process) instead of one per SuperNode "
            "(about 90 MB less per SuperNode). Experimental: under heavy load its ClientApps were "
            "seen stopped by flwr's task-token check (BENCHMARKS.md, fed10)."
        ),
    ] = False,
    aggregation: Annotated[
        str,
        typer.Option(
            help="plain (the server sums the devices' updates) or secagg (SecAgg+ over Flower "
            "messages: the server sees masked vectors and sums only; DP needs --sampling fixed)."
        ),
    ] = "plain",
    modulus_bits: Annotated[int, typer.Option(help="secagg: bits b of the ring Z_2^b.")] = 48,
    distributed_dp: Annotated[
        bool,
        typer.Option(
            help="With --epsilon and --aggregation secagg: each device adds its discrete "
            "Gaussian share before masking (distributed DP); the server adds no noise. "
            "--min-clients is then the fewest survivors whose noise a released sum holds."
        ),
    ] = False,
    secret_sampling: Annotated[
        bool,
        typer.Option(
            help="With --distributed-dp and Poisson sampling: claim amplification by sampling "
            "against everyone who sees the sums but not the cohort; the server, which picks "
            "the cohort here, gets the un-amplified epsilon (stated in the guarantee)."
        ),
    ] = False,
) -> None:
    """Run federated training on Flower: the SuperLink here, devices in SuperNodes.

    The ServerApp runs the simulator's algorithm (the same cohorts, device code and server
    step) with the devices answering Flower messages; with ``--epsilon`` it is DP-FedAvg
    (user-level (ε, δ)-DP, one device = one user, Poisson sampling, device-side clipping,
    Gaussian noise on the server's sum; the server is trusted with the clipped updates), and
    only released rounds are charged to the ledger. ``--aggregation secagg`` runs SecAgg+
    (:mod:`privrank.federated.flower.secure`) for the counts and every round: the server is then
    trusted with sums only (honest but curious), central DP needs fixed cohorts, and a round
    whose survivors are fewer than ``--min-clients`` aborts uncharged. ``--distributed-dp``
    moves the noise onto the devices (distributed discrete Gaussian, accounted as in the
    simulator): the server is then untrusted for individual updates and never sees an
    un-noised sum; each device is trusted to clip and add its share.
    """
    from privrank.data.fingerprint import fingerprint
    from privrank.federated import FederatedSettings
    from privrank.federated.flower.job import JOB_FILE, FlowerJob
    from privrank.federated.flower.launch import (
        SuperLinkAddress,
        start_shared_superexec,
        start_superlink,
        start_supernode,
        stop,
        submit_run,
        wait_for_port,
    )
    from privrank.federated.flower.model import assemble_model
    from privrank.federated.secure_aggregation import SecureAggregation
    from privrank.workflow.model_dir import TRAINING_FILE, write_trained

    if aggregation not in ("plain", "secagg"):
        raise ConfigError(f"--aggregation {aggregation!r}: expected plain or secagg")
    secure = (
        None
        if aggregation == "plain"
        else SecureAggregation.from_mapping({"modulus_bits": modulus_bits})
    )

    if shared_superexec and local_devices is None:
        raise ConfigError("--shared-superexec needs --local-devices (the SuperNodes it serves)")
    if max_in_flight is not None and max_in_flight < 0:
        raise ConfigError(f"--max-in-flight {max_in_flight}: expected 0 (no cap) or more")
    recommender, resolved, train, mode = _federated_train(data, model, param)
    settings = FederatedSettings.from_mapping(
        {
            "rounds": rounds,
            "clients_per_round": clients_per_round,
            "sampling": sampling,
            "server_learning_rate": server_lr,
            "learning_rate_schedule": lr_schedule,
            "min_clients": min_clients,
            "seed": seed,
            "adaptive_clipping": adaptive_clipping,
        }
    )
    spec = _privacy_spec(
        epsilon, delta, max_per_user, "most_recent", noise_seed, clipping_norm, accountant
    )
    _check_out(out, TRAINING_FILE)
    run_dir = (run_dir if run_dir is not None else out.with_name(out.name + ".run")).resolve()
    prepared = resolved.prepared
    key = budget_key or (None if prepared is None else prepared.split.source.name)
    job = FlowerJob(
        model=recommender.config,
        settings=settings,
        privacy=spec,
        population=train.n_users,
        n_items=train.n_items,
        data_fingerprint=fingerprint(train),
        run_dir=str(run_dir),
        ledger_key=key if spec is not None else None,
        ledger_url=ledger,
        resume=resume,
        min_nodes=min_nodes,
        enrol_timeout=enrol_timeout,
        round_timeout=round_timeout,
        secure=secure,
        distributed_dp=distributed_dp,
        secret_sampling=secret_sampling,
        max_in_flight=_in_flight(max_in_flight, local_devices is not None),
    )
    nodes = []
    if local_devices is not None:
        nodes = _node_files(local_devices, train.n_users, train.n_items)
        job = job.model_copy(update={"min_nodes": max(min_nodes, len(nodes))})
    run_dir.mkdir(parents=True, exist_ok=True)
    job.write(run_dir / JOB_FILE)
    console = make_console()
    address = SuperLinkAddress(host, port)
    home = run_dir / "flwr-home"
    logs = run_dir / "logs"
    processes = []
    try:
        superlink = start_superlink(address, home / "superlink", logs / "superlink.log")
        processes.append(superlink)
        try:
            wait_for_port(address.control, 120, superlink)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; see {logs / 'superlink.log'}") from exc
        console.print(
            f"SuperLink on {address.control}; "
            f"start devices with `privrank federated device --node-file F --superlink "
            f"{address.fleet}`",
            soft_wrap=True,
        )
        isolation = "process" if shared_superexec and nodes else "subprocess"
        for number, node_file in enumerate(nodes):
            processes.append(
                start_supernode(
                    node_file,
                    address.fleet,
                    port + 1 + number,
                    home / f"node-{number}",
                    logs / f"supernode-{number}.log",
                    isolation,
                )
            )
        if isolation == "process":
            runtime = [f"127.0.0.1:{port + 1 + number}" for number in range(len(nodes))]
            processes.append(
                start_shared_superexec(runtime, home / "superexec", logs / "superexec.log")
            )
        started = time.perf_counter()
        code = submit_run(run_dir / JOB_FILE, address, home / "cli", logs / "run.log")
        seconds = time.perf_counter() - started
    finally:
        for process in reversed(processes):
            stop(process)
    result = assemble_model(job, train)
    if code != 0 or result.state.round < settings.rounds:
        raise ConfigError(
            f"the Flower run ended after {result.state.round} of {settings.rounds} round(s) "
            f"(flwr run exit status {code}); see {logs / 'run.log'} and "
            f"{logs / 'superlink.log'}; --resume continues it"
        )
    record = _record(resolved, result.model, train, mode, seed, 1, seconds)
    record["federated"] = {
        "runtime": "flower",
        "settings": settings.model_dump(mode="json"),
        "run_dir": str(run_dir),
        "rounds": result.state.round,
        "released_rounds": result.state.released_rounds,
        "devices": train.n_users,
        "aggregation": aggregation,
        "distributed_dp": distributed_dp,
        "secret_sampling": secret_sampling,
        "max_in_flight": job.max_in_flight,
    }
    if result.guarantee is not None:
        spends = result.state.spend_ids
        record["privacy"] = {
            "ledger_key": key,
            "spend_id": spends[0] if spends else None,
            "spend_ids": spends,
            "epsilon": result.guarantee.epsilon,
            "delta": result.guarantee.delta,
        }
    write_trained(out, result.model, record)
    if result.guarantee is not None:
        console.print(result.guarantee.describe(), soft_wrap=True)
    console.print(
        f"trained {model} on {train.n_users:,} devices over Flower in {result.state.round} "
        f"rounds ({result.state.released_rounds} released, {seconds:.1f} s); saved to {out}; "
        f"metrics log {run_dir / 'metrics.jsonl'}",
        soft_wrap=True,
    )


def _in_flight(option: int | None, local: bool) -> int | None:
    """``--max-in-flight``: 0 is no cap; unset is 4 per usable core for a loopback federation
    (:func:`~privrank.federated.flower.waves.loopback_in_flight`), no cap for remote devices
    (each SuperNode on its own machine: nothing to protect, and a cap only serialises)."""
    from privrank.federated.flower.waves import loopback_in_flight

    if option is None:
        return loopback_in_flight() if local else None
    return option or None


def _node_files(folder: Path, devices: int, items: int) -> list[Path]:
    from privrank.federated.flower.devices import MANIFEST_FILE

    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = [folder / name for name in manifest["files"]]
        matches = manifest["devices"] == devices and manifest["items"] == items
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--local-devices {folder}: cannot read {path}: {exc}") from exc
    if not matches:
        raise ConfigError(
            f"--local-devices {folder}: {path} is for {manifest['devices']} devices and "
            f"{manifest['items']} items; --data has {devices} devices and {items} items"
        )
    return files
