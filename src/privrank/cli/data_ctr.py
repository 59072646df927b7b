"""``privrank data validate-ctr``: check a CTR file (libFM frappe/iPinYou, raw Criteo/Avazu).

Strict by default: any problem exits with code 2 and one message naming file, line, column,
field, value and what was expected (the first problems listed, all counted). With
``--on-error quarantine`` the good lines are counted and every rejected line is written, with
its line number and reason, to ``--rejects`` (TSV, written atomically).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from privrank.cli._console import make_console, styled
from privrank.cli.app import data_app

__all__ = ["validate_ctr_command"]


class CTRFormatOption(StrEnum):
    """CTR file layouts (see :mod:`privrank.data.readers.ctr`)."""

    frappe = "frappe"
    ipinyou = "ipinyou"
    criteo = "criteo"
    avazu = "avazu"


class OnError(StrEnum):
    """What a bad line does."""

    strict = "strict"
    quarantine = "quarantine"


@data_app.command("validate-ctr")
def validate_ctr_command(
    file: Annotated[Path, typer.Argument(help="The CTR file to check.")],
    fmt: Annotated[CTRFormatOption, typer.Option("--format", help="File layout.")],
    on_error: Annotated[OnError, typer.Option(help="strict (exit 2) or quarantine.")] = (
        OnError.strict
    ),
    rejects: Annotated[
        Path | None, typer.Option(help="Rejects file of quarantine (TSV line, reason, raw).")
    ] = None,
    featindex: Annotated[
        Path | None, typer.Option(help="iPinYou featindex.fm.txt (default: beside the file).")
    ] = None,
) -> None:
    """Check a CTR file; exit code 2 with every problem located if bad (strict)."""
    from privrank.data.readers.ctr import read_ctr

    result = read_ctr(
        file, fmt.value, on_error=on_error.value, rejects_path=rejects, featindex=featindex
    )
    frame = result.frame
    console = make_console()
    console.print(
        styled(
            ("ok", "green"),
            f": {file} holds {len(frame):,} valid {fmt.value} rows "
            f"({int(frame.labels.sum()):,} clicks, {len(frame.categorical)} categorical and "
            f"{len(frame.numeric)} numeric fields)",
        )
    )
    if result.rejected:
        console.print(
            styled(
                (f"quarantined {result.rejected:,} of {result.source_rows:,} lines", "yellow"),
                f" ({result.report.summary_counts()}); written to {result.rejects_path}",
            )
        )
