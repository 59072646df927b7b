"""``privrank evaluate``: models × protocols with CIs and paired tests, or one trained model.

Two forms:

- ``privrank evaluate --protocol ml100k-holdout --models most-popular,implicit-als,ease``
  (or ``--config RUN.toml``, whose fields the flags override): fits every model on the
  protocol's training part and evaluates it on the same users (:mod:`privrank.workflow.runner`);
- ``privrank evaluate --model DIR``: evaluates a model saved by ``privrank train`` on the test
  set of the protocol or split it was trained on (``--protocol`` may name it again, or another
  one built on exactly the same training rows); data that is not what the model was fitted on
  is refused.

Both print a table of the headline metrics with their bootstrap CIs (and the difference with the
baseline) and write, under ``--out`` (default ``$PRIVRANK_HOME/runs/<UTC time>``), one JSON
result and one per-user Parquet file per model and protocol, ``results.md``, ``summary.json``
and, unless ``--no-plots``, the PNG charts and ``report.md`` of :mod:`privrank.workflow.report`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from privrank.cli._console import StatusUpdate, make_console, status
from privrank.cli._options import Engine, EngineAddress, EngineWorkers, Track, make_engine
from privrank.cli.app import app
from privrank.errors import ArtifactError, ConfigError
from privrank.settings import home_dir

# The metrics, models and data modules (torch, scipy, pyarrow) are imported inside the commands,
# so that `privrank --help` and the other commands do not pay for them.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from privrank.workflow.model_dir import TrainedModel
    from privrank.workflow.protocols import PreparedProtocol
    from privrank.workflow.runner import RunSummary

__all__ = ["evaluate_command", "prepare_for_trained", "results_tables"]


class TestHistory(StrEnum):
    """How the validation items of a leave-one-out protocol enter the test-time history."""

    fold_in = "fold-in"
    refit = "refit"


def _split_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"expected a comma-separated list, got {value!r}")
    return items


def _cutoffs(value: str | None) -> list[int] | None:
    if value is None:
        return None
    items = _split_list(value)
    try:
        return [int(v) for v in items]
    except ValueError:
        raise ConfigError(f"--cutoffs: expected integers like 5,10,20, got {value!r}") from None


def _default_out() -> Path:
    return home_dir() / "runs" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


@app.command("evaluate")
def evaluate_command(
    protocol: Annotated[
        str | None,
        typer.Option(
            help="Protocol name(s), comma-separated (ml100k-holdout, beauty-loo, video-loo); "
            "with --model also a saved split directory."
        ),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Models to fit and compare, comma-separated.")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="A directory written by `privrank train`.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A run config (.json or .toml); flags override it.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default $PRIVRANK_HOME/runs/TIME).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Model compared with every other (default: the first).")
    ] = None,
    cutoffs: Annotated[
        str | None, typer.Option(help="Cutoffs to evaluate, comma-separated (e.g. 5,10,20).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every fit (default 0).")] = None,
    threads: Annotated[
        int | None, typer.Option(help="Threads of every fit (default 0: all cores).")
    ] = None,
    test_history: Annotated[
        TestHistory | None,
        typer.Option(help="How validation items enter the test history (default fold-in)."),
    ] = None,
    resamples: Annotated[
        int | None, typer.Option(help="Bootstrap resamples of the CIs (default 1000).")
    ] = None,
    validation: Annotated[
        bool,
        typer.Option(help="Also rank the validation items (leave-one-out) and record the means."),
    ] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG charts.")] = True,
    track: Track = None,
    engine: Engine = "local",
    workers: EngineWorkers = 2,
    address: EngineAddress = None,
) -> None:
    """Evaluate models by full ranking, with bootstrap CIs and paired tests against a baseline.

    With ``--model DIR --engine ray`` the users are scored over Ray tasks (the same metrics
    as in-process) and every user's top-k list is written to ``OUT/topk/part-*.parquet``.
    """

    from privrank.workflow.report import write_report
    from privrank.workflow.tracking import open_tracker

    tracker = open_tracker(track)  # an unknown tracker or a missing MLflow fails before any fit

    options: dict[str, Any] = {
        "baseline": baseline,
        "cutoffs": _cutoffs(cutoffs),
        "seed": seed,
        "threads": threads,
        "test_history": None if test_history is None else test_history.value,
        "n_resamples": resamples,
        "validation": validation or None,
    }
    options = {k: v for k, v in options.items() if v is not None}
    console = make_console()
    if not console.is_terminal:  # piped or logged: do not truncate the numbers to 80 columns
        console = make_console(width=max(console.width, 160))
    out = out if out is not None else _default_out()
    if model is not None:
        if models is not None or config is not None:
            raise ConfigError("--model evaluates one trained model: drop --models and --config")
        summary = _evaluate_trained(
            model, protocol, options, out, console, _ray_evaluator(engine, workers, address, out)
        )
    else:
        if engine != "local":
            raise ConfigError("--engine ray evaluates a trained model: use it with --model DIR")
        summary = _evaluate_models(protocol, models, config, options, out, console)
    for table in results_tables(summary.records):
        console.print(table)
    written = [out / "results.md"]
    images: list[Path] = []
    if plots:
        with status("drawing charts"):
            report = write_report(summary.records, out)
        images = list(report.images)
        written += [report.markdown, *images]
    console.print(
        f"{len(summary.files)} result(s) (JSON + per-user Parquet) in {out}; "
        + ", ".join(p.name for p in written),
        highlight=False,
        soft_wrap=True,
    )
    if tracker is not None:
        with status("logging to MLflow"):
            run_id = tracker.log_evaluation(summary, out, images=images)
        console.print(f"tracked in MLflow: {tracker.describe(run_id)}", soft_wrap=True)


def _evaluate_models(
    protocol: str | None,
    models: str | None,
    config: Path | None,
    options: dict[str, Any],
    out: Path,
    console: Console,
) -> RunSummary:
    from privrank.workflow.runner import RunConfig, run

    fields: dict[str, Any] = {}
    if config is not None:
        fields = RunConfig.from_file(config).model_dump(exclude_unset=True)
    if protocol is not None:
        fields["protocols"] = _split_list(protocol)
    if models is not None:
        fields["models"] = [{"name": name} for name in _split_list(models)]
    missing = [name for name in ("protocols", "models") if not fields.get(name)]
    if missing:
        raise ConfigError(
            "give --protocol and --models (or a --config naming them), or --model DIR; "
            f"missing: {', '.join(missing)}"
        )
    run_config = RunConfig(**(fields | options))
    with status("starting") as update:

        def on_status(label: str, message: str) -> None:
            update(f"{label}: {message}", model=label)

        def on_fit(label: str, report: Any) -> None:
            info = ({} if report.loss is None else {"loss": report.loss}) | dict(report.metrics)
            words = "".join(f", {k} {v:.5g}" for k, v in info.items())
            done = f"epoch {report.epoch}/{report.epochs}"
            update(f"{label}: {done}{words}", "epoch", model=label, done=report.epoch,
                   total=report.epochs, unit="epochs", **info)  # fmt: skip

        return run(
            run_config,
            out,
            fit_progress=on_fit,
            status=on_status,
            evaluate_progress=lambda label, done, total: _scored(update, label, done, total),
        )


def _scored(update: StatusUpdate, label: str, done: int, total: int) -> None:
    update(f"{label}: scored {done:,}/{total:,} test users", "evaluation", model=label,
           done=done, total=total, unit="users")  # fmt: skip


def prepare_for_trained(trained: TrainedModel, protocol: str | None) -> PreparedProtocol:
    """The protocol parts a trained model is evaluated on, checked against its training record.

    Raises:
        ConfigError: The model was fitted on a whole dataset (it has no held-out test set).
        ArtifactError: The protocol or split is not the one the model was fitted on (its
            training rows have another fingerprint), or a recorded split directory is gone.
    """
    from privrank.cli.train import load_split
    from privrank.data.fingerprint import fingerprint
    from privrank.workflow.protocols import PROTOCOLS, prepare

    data = trained.require_record()["data"]
    if protocol is None and data["kind"] == "dataset":
        raise ConfigError(
            f"{trained.directory} was trained on the whole dataset {data['argument']!r}, so no "
            "test set is held out from it; train on a protocol (e.g. --data ml100k-holdout) or "
            "a saved split to evaluate"
        )
    source = protocol or (data["protocol"] if data["kind"] == "protocol" else data["split_dir"])
    if source in PROTOCOLS:
        prepared = prepare(source)
    else:
        path = Path(source)
        if not (path / "split.json").is_file():
            raise ArtifactError(
                f"{source!r} is neither a named protocol ({', '.join(sorted(PROTOCOLS))}) nor a "
                "saved split directory; pass --protocol"
            )
        prepared = load_split(path)
    fitted = prepared.history if trained.history_mode == "refit" else prepared.train
    actual = fingerprint(fitted)
    if actual != data["train_fingerprint"]:
        recorded = data["train_fingerprint"][:16]
        raise ArtifactError(
            f"{trained.directory} was trained on {data['train_rows']:,} interactions "
            f"({data['kind']} {data['argument']!r}, fingerprint {recorded}…); "
            f"{prepared.spec.name!r} trains on {len(fitted):,} interactions with fingerprint "
            f"{actual[:16]}…. Evaluating there would not use the test set held out from this "
            "model's training data; refusing"
        )
    return prepared


def _ray_evaluator(engine: str, workers: int, address: str | None, out: Path) -> Any:
    """``None`` for ``--engine local``; else the Ray evaluator writing top-k to ``OUT/topk``."""
    fit_engine = make_engine(engine, workers, address)
    if fit_engine is None:
        return None
    from privrank.distributed import RayEngineConfig
    from privrank.distributed.ray_batch import evaluate_on_ray

    settings = RayEngineConfig(workers=workers, address=address)

    def run(model: Any, history: Any, test: Any, config: Any) -> Any:
        evaluation = evaluate_on_ray(
            model, history, test, config, engine=settings, out=out / "topk"
        )
        return evaluation.result

    return run


def _evaluate_trained(
    directory: Path,
    protocol: str | None,
    options: dict[str, Any],
    out: Path,
    console: Console,
    evaluator: Any = None,
) -> RunSummary:
    from privrank.workflow.model_dir import load_trained
    from privrank.workflow.runner import ModelSpec, RunConfig, evaluate_model, write_results

    refused = sorted(set(options) & {"seed", "threads", "test_history", "baseline", "validation"})
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise ConfigError(f"{flags}: not options of --model (the model is already trained)")
    if protocol is not None and "," in protocol:
        raise ConfigError("--model is evaluated on one protocol at a time")
    with status(f"loading {directory}"):
        trained = load_trained(directory)
        prepared = prepare_for_trained(trained, protocol)
    record = trained.require_record()
    model = trained.model
    spec = ModelSpec(name=model.name, params=record["model"]["config"])
    config = RunConfig(
        protocols=(prepared.spec,),
        models=(spec,),
        seed=record["fit"]["seed"],
        threads=record["fit"]["threads"],
        **options,
    )
    mode = "fold-in" if trained.history_mode == "fold-in" else "users"
    with status(f"evaluating {model.name} on {prepared.spec.name}") as update:
        model_run = evaluate_model(
            model,
            prepared,
            config,
            spec,
            history_mode=mode,
            fit_seconds=record["fit"]["seconds"],
            progress=lambda done, total: _scored(update, spec.display, done, total),
            evaluator=evaluator,
        )
    model_run.history_mode = trained.history_mode
    model_run.extra = {
        "trained_model": {
            "directory": str(directory.resolve()),
            "created_at": record.get("created_at"),
            "fitted_on": record["data"].get("fitted_on"),
            "train_fingerprint": record["data"]["train_fingerprint"],
        }
    }
    return write_results([model_run], config, out)


def results_tables(records: list[dict[str, Any]]) -> list[Table]:
    """One rich table per protocol: headline metrics with CIs, difference with the baseline."""
    from rich.table import Table

    from privrank.workflow.report import group_by_protocol, metric_label

    tables = []
    for name, group in group_by_protocol(records).items():
        headline = group[0]["headline"]
        confidence = group[0].get("bootstrap", {}).get("confidence", 0.95)
        counts = group[0].get("evaluation", {}).get("counts", {})
        users = counts.get("users_evaluated", 0)
        unit = "test users"
        if group[0].get("kind") == "ctr":  # a CTR protocol: metrics over test rows
            users, unit = counts.get("rows", 0), "test rows"
        table = Table(title=f"{name}: {users:,} {unit}, {confidence:.0%} bootstrap CIs")
        table.add_column("model", no_wrap=True, min_width=12)
        for metric in headline:
            table.add_column(metric_label(metric), justify="right", no_wrap=True)
        compared = any(r.get("comparisons") for r in group)
        if compared:
            table.add_column(
                f"Δ{metric_label(headline[0])} vs {group[0].get('baseline')}",
                justify="right",
                no_wrap=True,
            )
            table.add_column("p (t / Wilcoxon)", justify="right", no_wrap=True)
        table.add_column("fit s", justify="right")
        table.add_column("eval s", justify="right")
        for record in group:
            cells = [record["_label"]]
            for metric in headline:
                ci = record["metrics"].get(metric)
                cells.append(
                    "n/a" if not ci else f"{ci['estimate']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]"
                )
            if compared:
                c = record.get("comparisons", {}).get(headline[0])
                if c is None:
                    cells += ["baseline", ""]
                else:
                    tests = (
                        f"{c['pvalue']:.2g} (bootstrap)"  # a CTR AUC: paired bootstrap
                        if "pvalue" in c
                        else f"{c['t_pvalue']:.2g} / {c['wilcoxon_pvalue']:.2g}"
                    )
                    cells += [f"{c['mean_difference']:+.4f}", tests]
            timing = record.get("timing", {})
            cells += [_seconds(timing.get("fit_s")), _seconds(timing.get("evaluate_s"))]
            table.add_row(*cells)
        tables.append(table)
    return tables


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
