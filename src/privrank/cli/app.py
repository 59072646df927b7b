"""The typer application objects; command modules register themselves on these.

Each command group lives in its own module (``data_io``, ``data_split``, ``data_synth``, ...),
which ``privrank.cli.main`` imports so that its commands are registered. The global options
``--quiet`` and ``--log-format`` (before the command: ``privrank --quiet train ...``) set the
output mode of :mod:`privrank.cli._console`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from privrank.cli._console import LogFormat, configure

app = typer.Typer(
    name="privrank",
    help="Privacy-preserving recommendation and ranking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Import, validate, inspect, split and synthesise interaction data.")
app.add_typer(data_app, name="data", no_args_is_help=True)


@app.callback()
def _output_options(
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            envvar="PRIVRANK_QUIET",
            help="No progress and no informational lines (results and errors still print).",
        ),
    ] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            envvar="PRIVRANK_LOG_FORMAT",
            help="text, or json: progress and messages as one JSON object per line on stderr.",
        ),
    ] = LogFormat.text,
) -> None:
    """Privacy-preserving recommendation and ranking."""
    configure(quiet=quiet, log_format=log_format)
