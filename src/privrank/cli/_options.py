"""Typer options that several commands declare with the same meaning and help text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["FitThreads", "ModelConfig", "ModelParams", "NoiseSeed", "Track"]

ModelParams = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="A model parameter KEY=VALUE (repeatable). Settings of a private fit go in the "
        "model's 'private' block: --param private.KEY=VALUE (e.g. for ease "
        "private.count_share=0.5, for ials private.epochs=3); they need --epsilon.",
    ),
]
ModelConfig = Annotated[Path | None, typer.Option(help="A JSON or TOML file of model parameters.")]
NoiseSeed = Annotated[
    int | None, typer.Option(help="Seed of the DP noise (default: fresh, secure).")
]
FitThreads = Annotated[int, typer.Option(help="Threads of the fit (0: all cores).")]
Track = Annotated[
    str | None,
    typer.Option(
        "--track",
        help="Log the run to an experiment tracker: mlflow (the store of MLFLOW_TRACKING_URI, "
        "default sqlite:///mlruns.db in the working directory; privrank.workflow.tracking).",
    ),
]
