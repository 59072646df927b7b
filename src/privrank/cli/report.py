"""``privrank report RESULT.json…``: charts with confidence intervals and a markdown summary.

A thin layer over :func:`privrank.workflow.report.write_report`. Each argument is a result JSON
written by ``privrank evaluate`` (or a run's ``summary.json``, standing for all its results);
results of several runs can be combined, protocol by protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from privrank.cli._console import make_console
from privrank.cli.app import app

__all__ = ["report_command"]


@app.command("report")
def report_command(
    results: Annotated[
        list[Path], typer.Argument(help="Result JSON files, or a run's summary.json.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Output directory (default: the folder of the first argument)."),
    ] = None,
) -> None:
    """Write metric-vs-K curves and comparison charts (PNG) and a markdown summary."""

    from privrank.workflow.report import load_results, write_report

    records = load_results(results)
    destination = out if out is not None else results[0].parent
    written = write_report(records, destination)
    console = make_console()
    console.print(f"{len(records)} result(s) → {written.markdown}", highlight=False, soft_wrap=True)
    for image in written.images:
        console.print(f"  {image}", highlight=False, soft_wrap=True)
