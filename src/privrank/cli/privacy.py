"""``privrank privacy``: the privacy budget ledger from the command line.

- ``privrank privacy ledger [--dataset KEY] [--status S] [--url URL]``: every dataset's budget
  (ε and δ: total, spent, reserved, remaining) and the spends, as tables.
- ``privrank privacy budget DATASET --epsilon E --delta D [--name N] [--url URL]``: create or
  change a dataset's total budget.
- ``privrank privacy resolve SPEND_ID --as committed|released [--url URL]``: an administrator's
  decision on a spend a crashed run left *reserved*.
- ``privrank privacy report MODEL_DIR [--json]``: a saved model's guarantee in plain words (or
  as JSON): ε, δ, the unit (one user's entire history), mechanism, contribution bound, noise,
  accounting and the ledger spend; "NOT differentially private" for a non-private model and
  "NOT PRIVATE" for one whose noise a test scaled; and a warning that the model directory also
  holds the training users' own histories, which the guarantee does not cover.

The ledger is ``--url``, else ``$PRIVRANK_LEDGER_URL``, else ``$PRIVRANK_HOME/ledger.sqlite``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from privrank.cli._console import make_console, styled
from privrank.cli.app import app
from privrank.privacy.ledger import Budget, Ledger, SpendRecord, SpendStatus
from privrank.workflow.privacy_report import NOT_COVERED, RELEASE_COVERAGE, privacy_report

__all__ = [
    "NOT_COVERED",
    "RELEASE_COVERAGE",
    "budget",
    "budgets_table",
    "ledger",
    "privacy_app",
    "privacy_report",
    "report",
    "resolve",
    "spends_table",
]

privacy_app = typer.Typer(
    help="User-level differential privacy: the privacy budget ledger and model privacy reports."
)
app.add_typer(privacy_app, name="privacy", no_args_is_help=True)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Ledger database URL (sqlite:///file or postgresql://user@host:port/db); "
        "default $PRIVRANK_LEDGER_URL, else $PRIVRANK_HOME/ledger.sqlite.",
    ),
]


def _num(value: float) -> str:
    return f"{value:.6g}"


def budgets_table(budgets: list[Budget]) -> Table:
    """One row per dataset: its ε and δ budget, spent (committed), reserved and remaining."""
    table = Table(title="privacy budgets (spends add up by basic composition)")
    for name in ("dataset", "name", "ε total", "ε spent", "ε reserved", "ε remaining"):
        table.add_column(name, justify="left" if name in ("dataset", "name") else "right")
    for name in ("δ total", "δ spent", "δ reserved", "δ remaining"):
        table.add_column(name, justify="right")
    for b in budgets:
        table.add_row(
            b.dataset_key,
            b.name or "",
            _num(b.epsilon),
            _num(b.epsilon_spent),
            _num(b.epsilon_reserved),
            _num(b.epsilon_remaining),
            _num(b.delta),
            _num(b.delta_spent),
            _num(b.delta_reserved),
            _num(b.delta_remaining),
        )
    return table


def spends_table(spends: list[SpendRecord]) -> Table:
    """One row per spend, oldest first."""
    table = Table(title="spends")
    for name in ("id", "dataset", "description", "ε", "δ", "status", "owner", "reserved at"):
        table.add_column(name, justify="right" if name in ("ε", "δ") else "left")
    table.add_column("finished at")
    style = {
        SpendStatus.reserved: "yellow",
        SpendStatus.committed: "green",
        SpendStatus.released: "dim",
    }
    for s in spends:
        table.add_row(
            s.id,
            s.dataset_key,
            s.description,
            _num(s.epsilon),
            _num(s.delta),
            Text(s.status.value, style=style[s.status]),
            s.owner,
            s.reserved_at.strftime("%Y-%m-%d %H:%M:%S"),
            "" if s.finished_at is None else s.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


@privacy_app.command("ledger")
def ledger(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only this dataset's budget and spends.")
    ] = None,
    status: Annotated[
        SpendStatus | None, typer.Option("--status", help="Only spends with this status.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Show the privacy budgets and the spends against them.

    A spend left *reserved* by a run that crashed keeps counting against its budget.
    """
    console = make_console(width=200)
    with Ledger(url) as book:
        if dataset is None:
            budgets = book.budgets()
        else:
            one = book.budget(dataset)
            budgets = [] if one is None else [one]
        spends = book.spends(dataset, status=status)
        where = repr(book)
    if not budgets and not spends:
        what = "no budget or spends" if dataset is None else f"no budget or spends for {dataset!r}"
        console.print(f"{what} in {where}", highlight=False)
        return
    console.print(budgets_table(budgets))
    console.print(spends_table(spends))


@privacy_app.command("budget")
def budget(
    dataset: Annotated[str, typer.Argument(help="The dataset's key (e.g. its fingerprint).")],
    epsilon: Annotated[float, typer.Option("--epsilon", help="Total ε budget (≥ 0).")],
    delta: Annotated[float, typer.Option("--delta", help="Total δ budget, in [0, 1).")],
    name: Annotated[
        str | None, typer.Option("--name", help="A human-readable name for the dataset.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Create or change a dataset's total privacy budget."""
    with Ledger(url) as book:
        result = book.set_budget(dataset, epsilon, delta, name=name)
    make_console(width=200).print(budgets_table([result]))


class Resolution(StrEnum):
    """What ``privrank privacy resolve`` makes of a reserved spend."""

    committed = "committed"
    released = "released"


@privacy_app.command("resolve")
def resolve(
    spend_id: Annotated[
        str, typer.Argument(help="The spend's id (see `privrank privacy ledger`).")
    ],
    outcome: Annotated[
        Resolution,
        typer.Option(
            "--as",
            help="committed: count it for good. released: give it back — only when the run "
            "published nothing computed from the data.",
        ),
    ],
    url: UrlOption = None,
) -> None:
    """Commit or release a spend left reserved (e.g. by a run that crashed)."""
    with Ledger(url) as book:
        if outcome is Resolution.committed:
            book.commit(spend_id)
        else:
            book.release(spend_id)
    make_console().print(f"spend {spend_id} is now {outcome.value}", highlight=False)


# -------------------------------------------------------------------- privacy report
# privacy_report, NOT_COVERED and RELEASE_COVERAGE live in privrank.workflow.privacy_report
# (the serving console shows the same facts); they are re-exported here.


@privacy_app.command("report")
def report(
    model_dir: Annotated[
        Path, typer.Argument(help="A `privrank train` output directory or a model directory.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """State a saved model's privacy guarantee in plain words, and what it does not cover."""
    facts = privacy_report(model_dir)
    if as_json:
        typer.echo(json.dumps(facts, indent=2, ensure_ascii=False))
        return
    console = make_console(soft_wrap=True)
    style = {"private": "green"}
    color = style.get(facts["status"], "bold red")
    console.print(facts["statement"], style=color)
    guarantee = facts["guarantee"]
    if guarantee is not None:
        table = Table(title="guarantee (from the model's header)")
        table.add_column("field")
        table.add_column("value")
        for key, value in guarantee.items():
            if key == "epsilons":
                for name, epsilon in value.items():
                    table.add_row(f"epsilon by {name}", f"{epsilon:.6g}")
            elif value is not None and key != "composition":
                table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
        console.print(table)
        releases = Table(title="releases composed (in order)")
        for column in ("mechanism", "statistic", "sensitivity", "noise_multiplier", "noise_std",
                       "count", "sampling_rate"):  # fmt: skip
            releases.add_column(column)
        for release in guarantee["composition"]:
            std = release["noise_multiplier"] * release["sensitivity"]
            releases.add_row(
                release["mechanism"],
                release["statistic"],
                f"{release['sensitivity']:.6g}",
                f"{release['noise_multiplier']:.6g}",
                f"{std:.6g}",
                str(release["count"]),
                "-" if release["sampling_rate"] is None else f"{release['sampling_rate']:.6g}",
            )
        console.print(releases)
    console.print(styled(("WARNING:", "bold yellow"), f" {facts['warning']}"))
