"""``privrank demo``: the main job of ``make demo``, from a catalog data set to evaluated models.

It resolves MovieLens 100K through the catalog (``PRIVRANK_DATA_DIR``, the cache, or a verified
download), imports it with strict validation into the workspace, prints its statistics, splits
it with the ML-100K holdout protocol of the design (per-user random 80/20, seed 0), then trains
most-popular, EASE and a user-level differentially private model (DP-EASE at ε = 8) and
evaluates them over the full catalog with bootstrap CIs and paired comparisons, writing the
results under ``$PRIVRANK_HOME/runs/demo``.

The private fit spends from a privacy budget ledger of the demo's own
(``$PRIVRANK_HOME/runs/demo/ledger.sqlite``, recreated on every run with a budget of
ε = :data:`DEMO_BUDGET_EPSILON` for ``ml-100k``), so the demo never touches the user's real
ledger; the spend and the model's guarantee in plain words are printed at the end.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.rule import Rule

from privrank.cli._console import make_console, progress, status, styled
from privrank.cli.app import app
from privrank.cli.data_split import summary_table
from privrank.cli.evaluate import results_tables
from privrank.data import catalog
from privrank.data.splits import HoldoutSplit, split
from privrank.data.stats import dataset_stats, stats_table
from privrank.data.workspace import remember_import
from privrank.privacy.spec import PrivacySpec
from privrank.settings import datasets_dir, home_dir

__all__ = ["DEMO_BUDGET_EPSILON", "DEMO_PRIVACY", "demo_command"]

#: The demo's private model: user-level (ε = 8, δ = 1/(10·users)) DP, fresh secure noise on
#: every run. The row cap (1000) binds no ML-100K user: heavy users are down-weighted to
#: DP-EASE's norm bounds instead of losing rows (see ``privrank.models._private``).
DEMO_PRIVACY = PrivacySpec(epsilon=8.0, max_interactions_per_user=1000)
#: DP-EASE's ridge on the (reweighted, noisy) Gram matrix, selected on a validation split of
#: ML-100K's training data by ``bench/bench_privacy_utility.py``.
DEMO_PRIVATE_REGULARIZATION = 100.0
#: The ε budget the demo's own ledger grants ``ml-100k`` (δ budget: 1e-3).
DEMO_BUDGET_EPSILON = 10.0


@app.command("demo")
def demo_command(
    dataset: Annotated[str, typer.Option(help="Catalog data set to run on.")] = "ml-100k",
) -> None:
    """Import ML-100K, print its statistics and split, train and evaluate two models."""
    from privrank.workflow.run_config import ModelSpec, RunConfig
    from privrank.workflow.runner import run

    console = make_console()
    if not console.is_terminal:  # piped or logged: do not truncate the numbers to 80 columns
        console = make_console(width=max(console.width, 160))
    console.print(Rule(f"privrank demo: {dataset}"))
    with progress("import", f"reading {dataset}", unit="bytes") as bar:
        result = catalog.load(dataset, progress=bar.update)
    data = result.interactions
    sha256 = data.metadata.source_sha256  # computed while reading
    checksum = "" if sha256 is None else f" (sha256 {sha256[:16]}…)"
    console.print(
        f"read {result.source_rows:,} lines from {data.metadata.source_path}{checksum}, "
        "strict validation: 0 rejected"
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
    ease = {"regularization": 300.0}
    config = RunConfig(
        protocols=("ml100k-holdout",),
        models=(
            ModelSpec(name="most-popular"),
            ModelSpec(name="ease", params=ease),
            ModelSpec(
                name="ease",
                label="dp-ease",
                params={"regularization": DEMO_PRIVATE_REGULARIZATION},
                privacy=DEMO_PRIVACY,
            ),
        ),
        baseline="most-popular",
    )
    out = home_dir() / "runs" / "demo"
    ledger_url = _demo_ledger(out, dataset)
    with status("training and evaluating") as update:
        summary = run(
            config,
            out,
            data={"ml100k-holdout": data},
            status=lambda label, message: update(f"{label}: {message}", model=label),
            ledger_url=ledger_url,
        )
    for table in results_tables(summary.records):
        console.print(table)
    console.print(f"results written to {out}", soft_wrap=True)
    _print_privacy(console, summary.records, ledger_url)


def _demo_ledger(out, dataset: str) -> str:
    """A fresh ledger for the demo only, granting ``dataset`` the demo's budget."""
    from privrank.privacy.ledger import Ledger

    out.mkdir(parents=True, exist_ok=True)
    path = out / "ledger.sqlite"
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    with Ledger(url) as book:
        book.set_budget(dataset, DEMO_BUDGET_EPSILON, 1e-3, name=f"{dataset} (demo ledger)")
    return url


def _print_privacy(console: Console, records: list[dict], ledger_url: str) -> None:
    """Each private model's guarantee in plain words, and the demo ledger's spends."""
    from privrank.cli.privacy import budgets_table, spends_table
    from privrank.privacy.ledger import Ledger
    from privrank.privacy.mechanisms import PrivacyGuarantee

    console.print(Rule("privacy"))
    for record in records:
        privacy = record.get("privacy")
        label = record["model"].get("label") or record["model"]["name"]
        if privacy is None:
            console.print(styled((label, "bold"), ": trained without differential privacy"))
            continue
        guarantee = PrivacyGuarantee.from_dict(privacy["guarantee"])
        console.print(styled((label, "bold"), f": {guarantee.describe()}"))
    with Ledger(ledger_url) as book:
        console.print(budgets_table(book.budgets()))
        console.print(spends_table(book.spends()))
