"""``privrank demo``: the main job of ``make demo``, from a catalog data set to a split.

It resolves MovieLens 100K through the catalog (``PRIVRANK_DATA_DIR``, the cache, or a verified
download), imports it with strict validation into the workspace, prints its statistics, and
splits it with the ML-100K holdout protocol of the design (per-user random 80/20, seed 0).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.rule import Rule

from privrank.cli.app import app
from privrank.cli.data_split import summary_table
from privrank.data import catalog
from privrank.data.splits import HoldoutSplit, split
from privrank.data.stats import dataset_stats, stats_table
from privrank.data.workspace import remember_import
from privrank.settings import datasets_dir

__all__ = ["demo_command"]


@app.command("demo")
def demo_command(
    dataset: Annotated[str, typer.Option(help="Catalog data set to run on.")] = "ml-100k",
) -> None:
    """Import a catalog data set, print its statistics and a holdout split summary."""
    console = Console()
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
