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
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from privrank.cli._console import make_console, styled
from privrank.cli.app import app
from privrank.privacy.ledger import Budget, Ledger, SpendRecord, SpendStatus

__all__ = [
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
#: What the saved model directory holds that no DP guarantee covers.
NOT_COVERED = (
    "The model directory also holds the training users' own histories (the arrays "
    "base.history_indptr and base.history_items, keyed by the user ids in user_ids.parquet), "
    "kept so that each user's already-seen items can be excluded from their recommendations. "
    "They are the users' raw data, not a release: no differential-privacy guarantee covers "
    "them, and the directory must not be published or shared. The item id list "
    "(item_ids.parquet) is the training data's item vocabulary and is not covered either unless "
    "it comes from a public catalogue. Only the learned parameters and the cold-start "
    "popularity are covered. To publish a private model, write its release artifact with "
    "`privrank privacy release DIR --out RELEASE` (no user ids, histories or per-user state)."
)
#: The same facts for a release artifact (``privrank privacy release``).
RELEASE_COVERAGE = (
    "This is a release artifact: it holds no training user ids, no histories and no per-user "
    "state, only the learned item-side parameters and the private cold-start popularity, which "
    "the guarantee covers. The item id list (item_ids.parquet) is the training data's item "
    "vocabulary and is not covered unless it comes from a public catalogue."
)


def privacy_report(directory: str | Path) -> dict[str, Any]:
    """The privacy facts of a saved model, from its verified artifact header.

    Args:
        directory: A ``privrank train`` output directory (``training.json`` + ``model/``) or a
            model directory written by :meth:`~privrank.models.Recommender.save`.

    Returns:
        A JSON-able dict: ``status`` (``private``, ``not-private`` or
        ``not-private-testing``), ``statement`` (plain words), the guarantee's fields under
        ``guarantee`` (``None`` for a non-private model), the ledger spend under ``ledger``
        (``None`` when the directory records none) and the ``warning`` on what is not covered.

    Raises:
        ArtifactError: Not a model directory, or a file changed since it was saved.
    """
    from privrank.models._artifact import MODEL_FILE, verify_checksums
    from privrank.privacy.mechanisms import PrivacyGuarantee
    from privrank.workflow.model_dir import locate

    directory = Path(directory)
    model_dir, record = locate(directory)  # the training record cross-checked
    verify_checksums(model_dir)
    header = json.loads((model_dir / MODEL_FILE).read_text(encoding="utf-8"))
    ledger = None if record is None else record.get("privacy")
    raw = header.get("privacy")
    try:
        guarantee = None if raw is None else PrivacyGuarantee.from_dict(raw)
    except ValueError as exc:
        from privrank.errors import ArtifactError

        raise ArtifactError(f"{model_dir / MODEL_FILE}: {exc}") from exc
    name = header.get("model", "?")
    if guarantee is None:
        status = "not-private"
        statement = (
            f"NOT differentially private: this {name} model was trained without a privacy "
            "guarantee. Everything it learned may reveal individual users' interactions."
        )
    elif guarantee.noise_scale_for_testing == 1.0 and guarantee.noise_seed is not None:
        status = "not-private-fixed-seed"
        statement = (
            f"NOT PRIVATE (fixed noise seed): the {name} model's noise was drawn from the fixed "
            f"seed {guarantee.noise_seed} (--noise-seed, for tests), so anyone with the seed can "
            "subtract it and the claim below does NOT hold. "
            + guarantee.describe().rstrip(".")
            + "."
        )
    elif not guarantee.is_private:
        status = "not-private-testing"
        statement = (
            f"NOT PRIVATE (noise scaled for testing): the {name} model's noise was multiplied by "
            f"{guarantee.noise_scale_for_testing:g}, so the claim below does NOT hold. "
            + guarantee.describe().rstrip(".")
            + "."
        )
    else:
        status = "private"
        unit = (
            "The unit of privacy is one user's entire history (all of a user's interactions, "
            "added or removed together)."
        )
        statement = f"This {name} model guarantees {guarantee.describe().rstrip('.')}. {unit}"
    if ledger:
        spent_epsilon = _num(ledger.get("epsilon", math.nan))
        spent_delta = _num(ledger.get("delta", math.nan))
        statement += (
            f" Privacy budget: (ε={spent_epsilon}, δ={spent_delta}) spent from ledger key "
            f"{ledger.get('ledger_key')!r} (spend {ledger.get('spend_id')})."
        )
    elif guarantee is not None:
        statement += " No privacy-budget ledger spend is recorded with this model."
    return {
        "model": name,
        "directory": str(directory),
        "status": status,
        "statement": statement,
        "guarantee": None if guarantee is None else guarantee.to_dict(),
        "ledger": ledger or None,
        "release": bool(header.get("release", False)),
        "warning": RELEASE_COVERAGE if header.get("release") else NOT_COVERED,
    }


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
