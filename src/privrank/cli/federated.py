"""``privrank federated train``: federated training in the vectorised simulator.

Every user of the training part is one simulated device holding only its own history; the
server learns the item-side model from the devices' updates (:mod:`privrank.federated`). The
output is an ordinary trained-model directory (``model/`` + ``training.json``) that
``privrank evaluate --model`` and ``privrank serve --model`` accept; the server state and the
per-round metrics log live in the run directory (``--run-dir``, default ``OUT.run``), from
which ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from privrank.cli._console import make_console, progress, status
from privrank.cli._federated_options import (
    FEDERATED_MODELS,
    Accountant,
    AdaptiveClipping,
    BudgetKey,
    ClientsPerRound,
    ClippingNorm,
    Data,
    Delta,
    Epsilon,
    FederatedModel,
    LedgerUrl,
    LrSchedule,
    MaxPerUser,
    Out,
    Resume,
    Rounds,
    Seed,
    ServerLr,
)
from privrank.cli._options import Engine, EngineAddress, EngineWorkers, ModelParams, NoiseSeed
from privrank.cli.app import app
from privrank.cli.train import (
    _check_out,
    _privacy_spec,
    _record,
    _training_rows,
    parse_params,
    resolve_training_data,
)
from privrank.errors import ConfigError

federated_app = typer.Typer(help="Federated training: histories stay on the devices.")
app.add_typer(federated_app, name="federated", no_args_is_help=True)


@federated_app.command("train")
def train_command(
    data: Data,
    out: Out,
    model: FederatedModel = "fedmf",
    param: ModelParams = None,
    rounds: Rounds = 100,
    clients_per_round: ClientsPerRound = 100,
    sampling: Annotated[
        str,
        typer.Option(
            "--sampling",
            "--cohort",
            help="Cohort sampling: poisson (each device with probability m/N) or fixed (exactly "
            "m devices without replacement; under --epsilon accounted by RDP, replace-one).",
        ),
    ] = "poisson",
    server_lr: ServerLr = 0.5,
    lr_schedule: LrSchedule = "linear",
    min_clients: Annotated[
        int,
        typer.Option(
            help="A round with fewer devices releases nothing (private Poisson runs: must be 1, "
            "every round is released; DP over secagg needs --sampling fixed)."
        ),
    ] = 1,
    batch_size: Annotated[int, typer.Option(help="Devices simulated per batch.")] = 1024,
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
        Path | None, typer.Option(help="Server state and metrics log (default OUT.run).")
    ] = None,
    resume: Resume = False,
    aggregation: Annotated[
        str,
        typer.Option(help="plain (the server sums the updates) or secagg (SecAgg+: sums only)."),
    ] = "plain",
    distributed_dp: Annotated[
        bool,
        typer.Option(
            help="With --epsilon and --aggregation secagg: each device adds discrete Gaussian "
            "noise before masking (distributed DP) instead of the server adding Gaussian noise."
        ),
    ] = False,
    secret_sampling: Annotated[
        bool,
        typer.Option(
            help="With --distributed-dp and Poisson sampling: claim amplification by sampling, "
            "trusting the sampler (device self-sampling or a sampling service) to keep who "
            "was sampled secret from everyone who sees the sums."
        ),
    ] = False,
    dropout: Annotated[
        float, typer.Option(help="secagg: fraction of each round's devices that drop out.")
    ] = 0.0,
    modulus_bits: Annotated[int, typer.Option(help="secagg: bits b of the ring Z_2^b.")] = 48,
    popularity_prior: Annotated[
        Path | None,
        typer.Option(
            help="A local-DP popularity table (privrank telemetry ingest): the model's "
            "cold-start ranking (already charged when ingested)."
        ),
    ] = None,
    engine: Engine = "local",
    workers: EngineWorkers = 2,
    address: EngineAddress = None,
) -> None:
    """Train a model by federated learning in the simulator; each user is one device.

    With ``--epsilon`` the run is DP-FedAvg: user-level (ε, δ)-DP for one device = one user,
    Poisson sampling, device-side clipping and Gaussian noise on the sum; every released
    round is charged to the ledger (refused before any round when the budget does not cover
    the whole run). ``--aggregation secagg`` runs SecAgg+ over every round's cohort (the server
    learns only sums; with ``--epsilon`` it needs ``--sampling fixed``); adding
    ``--distributed-dp`` moves the noise onto the devices (distributed discrete Gaussian), so
    that no party sees an un-noised sum. ``--engine ray`` runs each round's batches of devices
    (``--batch-size`` devices each) as Ray tasks, at most ``--workers`` at once, on
    ``--address`` or a new local Ray instance: the model is the same, bit for bit, as in this
    process with the same options.
    """
    from privrank.federated import FederatedSettings, simulate
    from privrank.federated.secure_aggregation import SecureAggregation
    from privrank.models import FedMF, create_model
    from privrank.workflow.model_dir import TRAINING_FILE, write_trained
    from privrank.workflow.spend import RoundLedger

    if model not in FEDERATED_MODELS:
        raise ConfigError(
            f"--model {model!r}: federated training supports {', '.join(FEDERATED_MODELS)}"
        )
    config: Any
    if model == "mult-vae":
        from pydantic import ValidationError

        from privrank.config_errors import config_error
        from privrank.models._fedvae_rounds import FedVAEConfig

        try:
            config = FedVAEConfig.model_validate(parse_params(param))
        except ValidationError as exc:
            raise config_error(exc, "federated mult-vae", model=FedVAEConfig) from None
        recommender = create_model("mult-vae", {})  # what the result is (fold-in, scoring)
        if popularity_prior is not None:
            raise ConfigError("--popularity-prior is fedmf's cold-start ranking; not mult-vae")
    else:
        recommender = create_model(model, parse_params(param))  # validates the parameters
        if not isinstance(recommender, FedMF):  # pragma: no cover - FEDERATED_MODELS are FedMF
            raise ConfigError(f"--model {model!r} is not a federated model")
        config = recommender.config
    settings = FederatedSettings.from_mapping(
        {
            "rounds": rounds,
            "clients_per_round": clients_per_round,
            "sampling": sampling,
            "server_learning_rate": server_lr,
            "learning_rate_schedule": lr_schedule,
            "min_clients": min_clients,
            "batch_size": batch_size,
            "seed": seed,
            "adaptive_clipping": adaptive_clipping,
        }
    )
    if aggregation not in ("plain", "secagg"):
        raise ConfigError(f"--aggregation {aggregation!r}: expected plain or secagg")
    if distributed_dp and (aggregation != "secagg" or epsilon is None):
        raise ConfigError("--distributed-dp needs --aggregation secagg and --epsilon")
    secure = (
        None
        if aggregation == "plain"
        else SecureAggregation.from_mapping({"dropout": dropout, "modulus_bits": modulus_bits})
    )
    runner = _client_runner(engine, workers, address)
    spec = _privacy_spec(
        epsilon, delta, max_per_user, "most_recent", noise_seed, clipping_norm, accountant
    )
    _check_out(out, TRAINING_FILE)
    run_dir = run_dir if run_dir is not None else out.with_name(out.name + ".run")
    console = make_console()
    with status(f"loading {data}"):
        resolved = resolve_training_data(data)
    if resolved.prepared is None:
        raise ConfigError(f"--data {data}: give a protocol or a saved split (to evaluate on)")
    train, mode = _training_rows(resolved, recommender)
    prior = None
    if popularity_prior is not None:
        from privrank.federated.popularity_prior import load_popularity_prior

        prior = load_popularity_prior(popularity_prior, train)  # checked before any round
    key = budget_key or resolved.prepared.split.source.name

    def report(update: Any) -> None:
        info: dict[str, Any] = {"clients": f"{update.accepted}/{update.clients}"}
        info["loss"] = float(update.loss)
        if update.epsilon is not None:
            info["epsilon"] = float(update.epsilon)
        if not update.released:
            info["released"] = "no"
        bar.update(update.round, settings.rounds, **info)

    ledger_book = None if spec is None else RoundLedger(key, f"federated {model} -> {out}", ledger)
    with progress("round", f"federated {model}", unit="rounds") as bar:
        if ledger_book is None:
            result = simulate(
                config,
                train,
                settings,
                run_dir=run_dir,
                resume=resume,
                progress=report,
                secure=secure,
                runner=runner,
            )
        else:
            with ledger_book:
                result = simulate(
                    config,
                    train,
                    settings,
                    run_dir=run_dir,
                    spec=spec,
                    ledger=ledger_book,
                    resume=resume,
                    progress=report,
                    secure=secure,
                    distributed_dp=distributed_dp,
                    secret_sampling=secret_sampling,
                    runner=runner,
                )
    trained = result.model
    if prior is not None and isinstance(trained, FedMF):
        from privrank.federated.popularity_prior import apply_popularity_prior

        trained = apply_popularity_prior(trained, train, prior)
    record = _record(resolved, trained, train, mode, seed, 1, result.seconds)
    record["federated"] = {
        "settings": settings.model_dump(mode="json"),
        "run_dir": str(run_dir.resolve()),
        "rounds": result.state.round,
        "released_rounds": result.state.released_rounds,
        "devices": train.n_users,
        "aggregation": aggregation,
        "distributed_dp": distributed_dp,
        "secret_sampling": secret_sampling,
        "engine": runner.describe(),
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
    if prior is not None:
        from privrank.federated.popularity_prior import prior_record

        run_epsilon = None if result.guarantee is None else result.guarantee.epsilon
        record["popularity_prior"] = prior_record(prior, run_epsilon)
        console.print(
            f"cold start: the local-DP popularity of collection {prior.table.collection!r} "
            f"({prior.table.guarantee.epsilon_total:g}-LDP per user over "
            f"{len(prior.table.days)} day(s)); {prior.missing} training item(s) not in it "
            "score 0",
            soft_wrap=True,
        )
    write_trained(out, trained, record)
    if result.guarantee is not None:
        console.print(result.guarantee.describe(), soft_wrap=True)
    console.print(
        f"trained {model} on {train.n_users:,} devices in {result.state.round} rounds "
        f"({result.state.released_rounds} released, {result.seconds:.1f} s); saved to {out}; "
        f"metrics log {run_dir / 'metrics.jsonl'}",
        soft_wrap=True,
    )


def _client_runner(engine: str, workers: int, address: str | None) -> Any:
    """The runner of the devices' batches: in this process, or Ray tasks (``--engine ray``).

    Raises:
        ConfigError: An unknown engine, or ``--address`` without ``--engine ray``.
    """
    from privrank.federated.clients import LocalRunner

    if engine == "local":
        if address is not None:
            raise ConfigError("--address names a Ray cluster: it needs --engine ray")
        return LocalRunner()
    if engine != "ray":
        raise ConfigError(f"--engine must be local or ray. Got {engine!r}")
    from privrank.distributed.ray_federated import RayClientRunner

    return RayClientRunner(workers=workers, address=address)
