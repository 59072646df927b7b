"""``privrank train``: fit a model on a protocol's training part, a saved split, or a dataset.

``--data`` is resolved in this order:

1. a named protocol (``ml100k-holdout``, ``beauty-loo``): the model is fitted on the
   protocol's ``train`` part (on ``train + validation`` when the protocol's test-time history
   holds the validation items and the model cannot fold histories in);
2. a saved split directory (``privrank data split``): fitted on its ``train`` part;
3. a dataset (catalog name, workspace name or saved dataset directory): fitted on every row.
   Such a model has no held-out test set, and ``privrank evaluate --model`` refuses it.

The output directory holds the model artifact in ``model/`` (:meth:`Recommender.save`) and a
``training.json`` record: the model and its config, the seed and threads, the fit time, and the
data it saw: protocol or split, the source dataset's fingerprint, the split spec and the
fingerprint of the exact rows fitted on, plus the SHA-256 of the artifact's checksum list. With
it, ``privrank evaluate --model DIR`` rebuilds the right test set and refuses data that does not
match. The directory is written and read by :mod:`privrank.workflow.model_dir`; a private fit
spends through :func:`privrank.workflow.spend.fit_and_spend`.

``--tune TRIALS|SECONDS`` tunes the model first and ``--model auto`` chooses among privrank's
families (:mod:`privrank.cli.train_tuning`); the record then has a ``tuning`` section. Neither
is allowed with ``--epsilon``.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from privrank.cli._console import ProgressTask, make_console, progress, status
from privrank.cli._options import (
    Engine,
    EngineAddress,
    EngineWorkers,
    FitThreads,
    MaxFailures,
    ModelConfig,
    ModelParams,
    NoiseSeed,
    Track,
    make_engine,
)
from privrank.cli.app import app
from privrank.data.fingerprint import fingerprint
from privrank.data.interactions import Interactions
from privrank.data.splits import Split
from privrank.errors import ConfigError

# The workflow modules import torch and scipy.stats: imported where used, not at CLI start.
if TYPE_CHECKING:
    from privrank.privacy.spec import PrivacySpec
    from privrank.workflow.protocols import PreparedProtocol

__all__ = [
    "TrainingData",
    "parse_params",
    "resolve_training_data",
    "train_command",
]


def parse_params(pairs: list[str] | None, config: Path | None = None) -> dict[str, Any]:
    """Model parameters from a JSON/TOML file and ``key=value`` pairs (pairs win).

    A value is read as JSON when it parses (``300``, ``0.5``, ``true``, ``[1, 2]``), otherwise
    kept as a string (``dtype=float64``). A dotted key sets a setting of a nested block:
    ``private.count_share=0.5`` sets ``count_share`` in the ``private`` block (the settings of
    a private fit), merged with the block's other settings from the file or other pairs.

    Raises:
        ConfigError: A pair without ``=``, or an unreadable or malformed file.
    """
    params: dict[str, Any] = {}
    if config is not None:
        params.update(_read_mapping(config))
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE, e.g. regularization=300")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        block, dot, name = key.strip().partition(".")
        if not dot:
            params[block] = value
            continue
        if not block or not name or "." in name:
            raise ConfigError(
                f"--param {pair!r}: expected BLOCK.KEY=VALUE with one dot, e.g. "
                "private.count_share=0.5"
            )
        nested = params.get(block)
        if nested is None:
            nested = params[block] = {}
        elif not isinstance(nested, dict):
            raise ConfigError(f"--param {pair!r}: {block!r} is already set to {nested!r}")
        nested[name] = value
    return params


def _read_mapping(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path}: expected an object of parameters")
    return data


@dataclass(frozen=True)
class TrainingData:
    """What ``--data`` resolved to.

    Attributes:
        kind: ``protocol``, ``split`` or ``dataset``.
        argument: The ``--data`` value as given.
        prepared: The protocol's parts (``protocol`` and ``split`` kinds), else ``None``.
        dataset: The whole dataset (``dataset`` kind), else ``None``.
        split_dir: The split directory (``split`` kind), else ``None``.
    """

    kind: str
    argument: str
    prepared: PreparedProtocol | None = None
    dataset: Interactions | None = None
    split_dir: Path | None = None


def resolve_training_data(argument: str) -> TrainingData:
    """Resolve ``--data``: a named protocol, a saved split directory, or a dataset."""
    from privrank.workflow.protocols import PROTOCOLS, load_dataset, prepare

    if argument in PROTOCOLS:
        return TrainingData("protocol", argument, prepared=prepare(argument))
    path = Path(argument).expanduser()
    if (path / "split.json").is_file():
        return TrainingData("split", argument, prepared=load_split(path), split_dir=path)
    return TrainingData("dataset", argument, dataset=load_dataset(argument))


def load_split(path: Path) -> PreparedProtocol:
    """A saved split as prepared protocol parts (named ``split:<folder>``)."""
    from privrank.workflow.protocols import from_split, protocol_for_split

    parts = Split.load(path)
    spec = protocol_for_split(parts, f"split:{path.resolve().name}", str(path))
    return from_split(spec, parts)


@app.command("train")
def train_command(
    data: Annotated[
        str,
        typer.Option(
            help="A protocol name (ml100k-holdout, beauty-loo), a saved split directory, or a "
            "dataset (catalog or workspace name, or directory)."
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            help="Registry name of the model (ease, ials, ...), or auto: the family with the "
            "best validation NDCG@10 within the --tune budget."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output directory (model/ and training.json).")],
    param: ModelParams = None,
    config: ModelConfig = None,
    seed: Annotated[int, typer.Option(help="Seed of the fit.")] = 0,
    threads: FitThreads = 0,
    epsilon: Annotated[
        float | None,
        typer.Option(help="Train with user-level (ε, δ)-DP at this ε (spent from the ledger)."),
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="δ of a private fit (default 1/(10·users)).")
    ] = None,
    max_per_user: Annotated[
        int | None,
        typer.Option(help="Contribution bound of a private fit: interactions kept per user."),
    ] = None,
    selection: Annotated[
        str, typer.Option(help="Rows kept by the bound: most_recent or uniform.")
    ] = "most_recent",
    noise_seed: NoiseSeed = None,
    clipping_norm: Annotated[
        float | None,
        typer.Option(help="Per-user L2 clipping norm C of a private fit (default 1)."),
    ] = None,
    accountant: Annotated[
        str | None,
        typer.Option(help="Accountant of a private fit: pld (default, tight) or rdp."),
    ] = None,
    budget_key: Annotated[
        str | None,
        typer.Option(help="Ledger key to spend from (default: the source dataset's name)."),
    ] = None,
    ledger: Annotated[
        str | None, typer.Option(help="Ledger database URL (default PRIVRANK_LEDGER_URL).")
    ] = None,
    track: Track = None,
    tune: Annotated[
        str | None,
        typer.Option(
            help="Tune first (Optuna, on validation data carved from train): TRIALS (30) or "
            "SECONDS (600s, 10m). Refused with --epsilon."
        ),
    ] = None,
    engine: Engine = "local",
    workers: EngineWorkers = 2,
    address: EngineAddress = None,
    max_failures: MaxFailures = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            help="Write a checkpoint after each epoch here (iALS, SASRec, Mult-VAE; not private "
            "fits); rerunning the same fit (model, parameters, seed, data) resumes from it."
        ),
    ] = None,
) -> None:
    """Train a model and save it with a record of the exact data it was fitted on.

    With ``--engine ray`` the fit's sums over users (EASE's and ItemKNN's Gram matrix) run as
    Ray tasks over user partitions, iALS solves its user and item blocks on ``--workers``
    long-lived Ray actors (a lost actor is restarted and the fit resumes from its last
    checkpoint), and SASRec and Mult-VAE train data-parallel on
    ``--workers`` Ray Train workers (DDP over gloo; DP-SGD with the noise added once per
    step); the privacy guarantee and the single ledger charge are those of the in-process fit.

    With ``--epsilon`` the fit is user-level differentially private: the spend (ε, δ) is
    reserved in the privacy budget ledger before training (refused with exit code 2 when the
    dataset's budget does not cover it), committed after the model is saved, and released if
    training fails.
    """
    from privrank.cli.train_tuning import AUTO, check_tuning_request, tune_for_training
    from privrank.models import FitOptions, create_model
    from privrank.ranking.ctr import is_ranker
    from privrank.workflow.model_dir import TRAINING_FILE, write_trained
    from privrank.workflow.runner import split_test_shape
    from privrank.workflow.spend import fit_and_spend
    from privrank.workflow.tracking import open_tracker

    params = parse_params(param, config)
    if is_ranker(model):  # a CTR ranker on a CTR protocol (privrank.cli.train_ctr)
        from privrank.cli.train_ctr import train_ctr

        train_ctr(data, model, params, out, seed=seed, threads=threads,
                  private=epsilon is not None, tune=tune)  # fmt: skip
        return
    spec = _privacy_spec(
        epsilon, delta, max_per_user, selection, noise_seed, clipping_norm, accountant
    )
    budget = check_tuning_request(model, tune, params, spec)  # private tuning is refused
    # Validates name and parameters first (auto: the chosen model's, once tuned; a private
    # auto fit was refused above).
    recommender = None if model == AUTO else create_model(model, params)
    if spec is not None and recommender is not None and not recommender.supports_privacy:
        raise ConfigError(
            f"{model} has no differentially private training yet; private models: "
            f"{', '.join(_private_models())}"
        )
    if spec is not None and recommender is not None:
        recommender.check_privacy(spec)  # e.g. no --max-per-user: refused before loading data
    if spec is None and isinstance(params.get("private"), dict):
        raise ConfigError(
            f"--param private.*: settings of a private fit, but there is no --epsilon; the fit "
            f"would ignore {params['private']!r}"
        )
    fit_engine = make_engine(engine, workers, address, max_failures)
    if fit_engine is not None and recommender is not None and not recommender.supports_engine:
        raise ConfigError(f"{model} has no distributed fit on --engine {engine}")
    if fit_engine is not None and spec is not None and recommender is not None:
        recommender.check_private_engine(engine)  # refused before the ledger is touched
    if checkpoint_dir is not None and recommender is not None:
        recommender.check_checkpoints(private=spec is not None)  # before loading the data
    _check_out(out, TRAINING_FILE)
    tracker = open_tracker(track)  # an unknown tracker or a missing MLflow fails before the fit
    console = make_console()
    with status(f"loading {data}"):
        resolved = resolve_training_data(data)
    tuning = None
    if budget is not None:
        tuning = tune_for_training(
            model,
            params,
            budget,
            prepared=resolved.prepared,
            dataset=resolved.dataset,
            seed=seed,
            threads=threads,
            console=console,
        )
        model = tuning.model
        recommender = create_model(model, tuning.config)
    if recommender is None:  # pragma: no cover - auto always tunes (check_tuning_request)
        raise ConfigError("--model auto needs --tune")
    train, mode = _training_rows(resolved, recommender)
    validation = None
    if resolved.prepared is not None and mode != "refit":
        validation = resolved.prepared.validation
    if budget_key is None and (spec is not None or _local_collection(recommender)):
        # Every split of one dataset spends from one budget: the source dataset's, not the split's.
        prepared = resolved.prepared
        # (without a protocol, ``train`` is the whole dataset)
        budget_key = prepared.split.source.name if prepared is not None else train.metadata.name
    reports: list[Any] = []  # every epoch's report, for the tracker
    bar: list[ProgressTask] = []  # the epoch display, once the fit starts

    def report(update: Any) -> None:
        reports.append(update)
        info = ({} if update.loss is None else {"loss": update.loss}) | dict(update.metrics)
        if bar:
            bar[0].update(update.epoch, update.epochs, **info)

    options = FitOptions(
        seed=seed, threads=threads, progress=report, privacy=spec, engine=fit_engine,
        checkpoint_dir=checkpoint_dir,
        # what a protocol will test (its split's shape), as an evaluation tells its fits
        test_shape=None if resolved.prepared is None else split_test_shape(
            resolved.prepared.split.spec
        ),
    )  # fmt: skip
    # A private fit reserves its spend before anything trains or shows (refused: exit 2,
    # nothing written), and commits it once the model is saved.
    with (
        ExitStack() as display,
        fit_and_spend(
            recommender,
            train,
            options,
            budget_key=budget_key,
            description=f"train {model} -> {out}",
            validation=validation,
            ledger_url=ledger,
            before_fit=lambda: bar.append(
                display.enter_context(progress("epoch", f"fitting {model}", unit="epochs"))
            ),
        ) as fitted,
    ):
        seconds = fitted.seconds
        record = _record(resolved, recommender, train, mode, seed, threads, seconds)
        if tuning is not None:
            record["tuning"] = tuning.to_dict()
        if fitted.spend is not None:
            record["privacy"] = fitted.spend_record()
        if fit_engine is not None:
            record["engine"] = fit_engine.describe()
        if checkpoint_dir is not None:  # where the fit started from, and what it recovered
            record["checkpoints"] = {
                "directory": str(checkpoint_dir.resolve()),
                "resumed_from_epoch": recommender.resumed_from_epoch_,
                "recoveries": recommender.recoveries_,
            }
        write_trained(out, recommender, record)
    guarantee = recommender.privacy_guarantee_  # set by every private fit
    if guarantee is not None:
        console.print(guarantee.describe(), highlight=False, soft_wrap=True)
    else:
        from privrank.models.capabilities import LocalDPCollection

        if isinstance(recommender, LocalDPCollection):  # a local-DP collection (ldp-popular)
            console.print(recommender.describe_collection(), highlight=False, soft_wrap=True)
    console.print(
        f"trained {model} on {len(train):,} interactions ({resolved.kind} {data}) in "
        f"{seconds:.1f} s; saved to {out}",
        highlight=False,
        soft_wrap=True,
    )
    if resolved.kind == "dataset":
        console.print(
            "note: fitted on the whole dataset, so it has no held-out test set; train on a "
            "protocol or a split to evaluate it with `privrank evaluate --model`",
            highlight=False,
        )
    if tracker is not None:
        with status("logging to MLflow"):
            run_id = tracker.log_training(recommender, record, out, reports)
        console.print(f"tracked in MLflow: {tracker.describe(run_id)}", soft_wrap=True)


def _local_collection(recommender: Any) -> bool:
    from privrank.models.capabilities import LocalDPCollection

    return isinstance(recommender, LocalDPCollection)


def _private_models() -> list[str]:
    from privrank.models import model_class, model_names

    return [name for name in model_names() if model_class(name).supports_privacy]


def _privacy_spec(
    epsilon: float | None,
    delta: float | None,
    max_per_user: int | None,
    selection: str,
    noise_seed: int | None,
    clipping_norm: float | None = None,
    accountant: str | None = None,
) -> PrivacySpec | None:
    """The :class:`~privrank.privacy.PrivacySpec` of the options, or ``None`` without ε."""
    if epsilon is None:
        given = [
            flag
            for flag, value in (
                ("--delta", delta),
                ("--max-per-user", max_per_user),
                ("--noise-seed", noise_seed),
                ("--clipping-norm", clipping_norm),
                ("--accountant", accountant),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --epsilon (a private fit)")
        return None
    from privrank.privacy.spec import PrivacySpec

    options: dict[str, object] = {
        "epsilon": epsilon,
        "delta": delta,
        "max_interactions_per_user": max_per_user,
        "selection": selection,  # the option's text, validated by PrivacySpec
        "noise_seed": noise_seed,
    }
    if clipping_norm is not None:
        options["clipping_norm"] = clipping_norm
    if accountant is not None:
        options["accountant"] = accountant
    return PrivacySpec.from_mapping(options)


def _check_out(out: Path, training_file: str) -> None:
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not (out / training_file).is_file():
        raise ConfigError(
            f"--out {out}: exists and is not a trained-model directory; refusing to replace it"
        )


def _training_rows(resolved: TrainingData, recommender: Any) -> tuple[Interactions, str]:
    """The rows to fit on and the test-time history mode (``users``, ``fold-in``, ``refit``)."""
    if resolved.prepared is None:
        if resolved.dataset is None:  # resolve_training_data sets one of them
            raise ConfigError(f"--data {resolved.argument}: neither a protocol nor a dataset")
        return resolved.dataset, "users"
    return resolved.prepared.training_rows(recommender)


def _record(
    resolved: TrainingData,
    recommender: Any,
    train: Interactions,
    mode: str,
    seed: int,
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    from privrank.workflow.model_dir import training_record

    prepared = resolved.prepared
    data: dict[str, Any] = {
        "kind": resolved.kind,
        "argument": resolved.argument,
        "train_fingerprint": fingerprint(train),
        "train_rows": len(train),
        "fitted_on": "train + validation" if mode == "refit" else "train",
    }
    if prepared is not None:
        described = prepared.describe()
        data |= {
            "protocol": prepared.spec.name,
            "protocol_spec": described["protocol"],
            "dataset": described["dataset"],
            "split": described["split"]["spec"],
            "split_dir": None if resolved.split_dir is None else str(resolved.split_dir.resolve()),
        }
    else:
        data["dataset"] = {"name": train.metadata.name, "fingerprint": data["train_fingerprint"]}
    fit = {
        "seed": seed,
        "threads": threads,
        "seconds": seconds,
        "history_mode": mode,
        "summary": recommender.fit_summary(),
    }
    return training_record(recommender, fit=fit, data=data)
