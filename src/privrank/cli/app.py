"""The typer application objects; command modules register themselves on these.

Each command group lives in its own module (``data_io``, ``data_split``, ``data_synth``, ...),
which ``privrank.cli.main`` imports so that its commands are registered.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="privrank",
    help="Privacy-preserving recommendation and ranking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Import, validate, inspect, split and synthesise interaction data.")
app.add_typer(data_app, name="data", no_args_is_help=True)
