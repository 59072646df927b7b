"""``privrank tune``: search a model's hyper-parameters on a validation split (Optuna).

The data is either ``--protocol NAME`` (``ml100k-holdout``, ``beauty-loo``) or ``--data`` (a
catalog dataset, a workspace dataset, a saved dataset directory, or a saved split directory).
Tuning never reads test data:

- a protocol or split **with** a validation part (``beauty-loo``): trials fit on its ``train``
  and are scored on its ``validation``;
- a protocol or split **without** one (``ml100k-holdout``): a validation part is carved out of
  its ``train`` (per-user random holdout, ``--validation-fraction``, ``--validation-seed``);
- a plain dataset: the validation part is carved out of the whole dataset (it has no test part).

``--out FILE`` receives the JSON record of :meth:`privrank.tuning.TuneResult.save` (best config,
every trial, the search space, the data's fingerprints); ``--best-config FILE`` also writes the
best config alone as a flat JSON object, ready for ``privrank train --config FILE``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from privrank.atomic import atomic_file
from privrank.cli._console import emit, make_console, status
from privrank.cli._options import Track
from privrank.cli.app import app
from privrank.cli.train_tuning import carved, prepared_tuning_parts
from privrank.errors import ConfigError

# Data, metrics and tuning modules (pyarrow, torch, scipy) are imported inside the functions.
if TYPE_CHECKING:
    from rich.table import Table

    from privrank.data.interactions import Interactions

__all__ = ["TuningData", "resolve_tuning_data", "tune_command"]


class TuningData:
    """The train and validation parts a tuning run uses, and where they came from.

    Attributes:
        train: What every trial fits on.
        validation: What every trial is scored on.
        record: JSON facts for the tuning record (kind, argument, protocol, dataset,
            how validation was made).
    """

    def __init__(self, train: Interactions, validation: Interactions, record: dict[str, Any]):
        self.train = train
        self.validation = validation
        self.record = record


def resolve_tuning_data(
    *,
    data: str | None,
    protocol: str | None,
    validation_fraction: float = 0.2,
    validation_seed: int = 0,
) -> TuningData:
    """The tuning parts for ``--protocol`` or ``--data`` (exactly one), test data left out.

    Raises:
        ConfigError: Neither or both given, an unknown protocol, or no validation rows.
    """
    from privrank.data.fingerprint import fingerprint
    from privrank.data.splits import Split
    from privrank.tuning import carve_validation
    from privrank.workflow.protocols import from_split, load_dataset, prepare, protocol_for_split

    exactly_one = "give exactly one of --data and --protocol"
    record: dict[str, Any] = {}
    if protocol is not None:
        if data is not None:
            raise ConfigError(exactly_one)
        prepared = prepare(protocol)
        record = {"kind": "protocol", "argument": protocol, "protocol": prepared.spec.name}
    elif data is None:
        raise ConfigError(exactly_one)
    elif (Path(data).expanduser() / "split.json").is_file():
        path = Path(data).expanduser()
        parts = Split.load(path)
        prepared = from_split(protocol_for_split(parts, f"split:{path.name}", str(path)), parts)
        record = {"kind": "split", "argument": data, "split_dir": str(path.resolve())}
    else:
        dataset = load_dataset(data)
        train, validation = carve_validation(dataset, validation_fraction, validation_seed)
        record = {
            "kind": "dataset",
            "argument": data,
            "dataset": {"name": dataset.metadata.name, "fingerprint": fingerprint(dataset)},
            "validation_split": carved(validation_fraction, validation_seed, "the whole dataset"),
        }
        return TuningData(train, validation, record)
    described = prepared.describe()
    record |= {"dataset": described["dataset"], "split": described["split"]["spec"]}
    train, validation, source = prepared_tuning_parts(
        prepared, validation_fraction, validation_seed
    )
    return TuningData(train, validation, record | source)


@app.command("tune")
def tune_command(
    model: Annotated[str, typer.Option(help="Registry name of the model (ials, ease, ...).")],
    out: Annotated[Path, typer.Option(help="Where to write the JSON tuning record.")],
    data: Annotated[
        str | None,
        typer.Option(
            help="A dataset (catalog or workspace name, or directory) or a saved split "
            "directory. Exclusive with --protocol."
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(help="A named protocol (ml100k-holdout, beauty-loo). Exclusive with --data."),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="Most trials (at least one of --trials/--time-budget).")
    ] = None,
    time_budget: Annotated[
        float | None, typer.Option(help="Wall-clock budget of the whole search, in seconds.")
    ] = None,
    metric: Annotated[str, typer.Option(help="Validation metric to maximise.")] = "ndcg@10",
    seed: Annotated[int, typer.Option(help="Seed of the sampler and of every fit.")] = 0,
    threads: Annotated[int, typer.Option(help="Threads of every fit (0: all cores).")] = 0,
    sampler: Annotated[str, typer.Option(help="tpe or random.")] = "tpe",
    validation_fraction: Annotated[
        float, typer.Option(help="Share of each user's training rows carved out for validation.")
    ] = 0.2,
    validation_seed: Annotated[int, typer.Option(help="Seed of that carve-out.")] = 0,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="Hold a model parameter fixed: KEY=VALUE (repeatable)."),
    ] = None,
    best_config: Annotated[
        Path | None,
        typer.Option(help="Also write the best config as flat JSON (for `privrank train`)."),
    ] = None,
    track: Track = None,
) -> None:
    """Tune a model's hyper-parameters on a validation split and record the best config."""
    from privrank.cli.train import parse_params
    from privrank.tuning import TuneConfig, search_space, tune
    from privrank.workflow.tracking import open_tracker

    config = TuneConfig(
        metric=metric,
        n_trials=trials,
        time_budget_s=time_budget,
        seed=seed,
        threads=threads,
        sampler=sampler,
        fixed=parse_params(param),
    )
    search_space(model, config.fixed)  # unknown model or bad space fails before loading data
    tracker = open_tracker(track)

    console = make_console()
    with status("loading data"):
        parts = resolve_tuning_data(
            data=data,
            protocol=protocol,
            validation_fraction=validation_fraction,
            validation_seed=validation_seed,
        )
    console.print(
        f"tuning {model} on {len(parts.train):,} rows, scoring {config.metric} on "
        f"{len(parts.validation):,} validation rows ({parts.record['validation_split']['source']})",
        highlight=False,
    )

    def show(record: Any) -> None:  # a progress line: hyper-parameters and scores only
        value = "-" if record.value is None else f"{record.value:.4f}"
        note = f" ({record.note})" if record.note else ""
        emit(
            "trial",
            f"trial {record.number}: {record.state} {value} in {record.seconds:.1f} s "
            f"{record.params}{note}",
            trial=record.number,
            state=record.state,
            value=record.value,
            seconds=record.seconds,
            params=record.params,
        )

    result = tune(model, parts.train, parts.validation, config, on_trial=show)
    result = replace(result, data={**result.data, **parts.record})
    result.save(out)
    if best_config is not None:
        with atomic_file(best_config, encoding="utf-8") as handle:
            json.dump(result.best_config, handle, indent=2)
            handle.write("\n")
    console.print(_top_trials(result))
    console.print(
        f"best {config.metric} {result.best_value:.4f} (trial {result.best_trial} of "
        f"{len(result.trials)}, {result.elapsed_s:.1f} s, stopped by {result.stop_reason}): "
        f"{json.dumps(result.best_config)}; record saved to {out}",
        highlight=False,
        soft_wrap=True,
    )
    if tracker is not None:
        run_id = tracker.log_tuning(result.to_dict(), out)
        console.print(f"tracked in MLflow: {tracker.describe(run_id)}", soft_wrap=True)


def _top_trials(result: Any, rows: int = 10) -> Table:
    from rich.table import Table

    names = list(result.space.get("params", {}))
    table = Table(title=f"best trials of {result.model} ({result.metric} on validation)")
    for column in ["trial", result.metric, "seconds", *names]:
        table.add_column(column, justify="right")
    done = sorted(
        (t for t in result.trials if t.value is not None), key=lambda t: (-t.value, t.number)
    )
    for trial in done[:rows]:
        values = [_cell(trial.params.get(name)) for name in names]
        table.add_row(str(trial.number), f"{trial.value:.4f}", f"{trial.seconds:.1f}", *values)
    return table


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
