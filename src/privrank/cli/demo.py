"""``privrank demo``: the main job of ``make demo``, from a catalog data set to evaluated models.

It resolves MovieLens 100K through the catalog (``PRIVRANK_DATA_DIR``, the cache, or a verified
download), imports it with strict validation into the workspace, prints its statistics, splits
it with the ML-100K holdout protocol of the design (per-user random 80/20, seed 0), then trains
most-popular and EASE and evaluates both over the full catalog with bootstrap CIs and a paired
comparison, writing the results under ``$PRIVRANK_HOME/runs/demo``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.rule import Rule

from privrank.cli.app import app
from privrank.cli.data_split import summary_table
from privrank.cli.evaluate import results_tables
from privrank.data import catalog
from privrank.data.splits import HoldoutSplit, split
from privrank.data.stats import dataset_stats, stats_table
from privrank.data.workspace import remember_import
from privrank.metrics.run_config import RunConfig
from privrank.metrics.runner import run
from privrank.settings import datasets_dir, home_dir

__all__ = ["demo_command"]


@app.command("demo")
def demo_command(
    dataset: Annotated[str, typer.Option(help="Catalog data set to run on.")] = "ml-100k",
) -> None:
    """Import ML-100K, print its statistics and split, train and evaluate two models."""
    console = Console()
    if not console.is_terminal:  # piped or logged: do not truncate the numbers to 80 columns
        console = Console(width=max(console.width, 160))
    console.print(Rule(f"privrank demo: {dataset}"))
    with console.status(f"reading {dataset}"):
        result = catalog.load(dataset)
    data = result.interactions
    console.print(
        f"read {result.source_rows:,} lines from {data.metadata.source_path} "
        f"(sha256 {data.metadata.source_sha256[:16]}…), strict validation: 0 rejected"
    )
    destination = datasets_dir() / dataset
    data.save(destination)
    remember_import(destination)
    console.print(stats_table(dataset_stats(data)))

    console.print(Rule("holdout split (per-user random 80/20, seed 0)"))
    parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
    parts.save(destination / "splits" / "holdout")
    console.print(summary_table(parts))
    console.print(f"dataset and split saved under {destination}", soft_wrap=True)

    console.print(Rule("models on the ml100k-holdout protocol (full ranking, 95% bootstrap CIs)"))
    config = RunConfig(
        protocols=("ml100k-holdout",),
        models=({"name": "most-popular"}, {"name": "ease", "params": {"regularization": 300.0}}),
        baseline="most-popular",
    )
    out = home_dir() / "runs" / "demo"
    with console.status("training and evaluating") as status:
        summary = run(
            config,
            out,
            data={"ml100k-holdout": data},
            status=lambda label, message: status.update(f"[bold]{label}[/]: {message}"),
        )
    for table in results_tables(summary.records):
        console.print(table)
    console.print(f"results written to {out}", soft_wrap=True)
