"""Typer options that several commands declare with the same meaning and help text."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from privrank.models.engine import FitEngine

__all__ = [
    "Engine",
    "EngineAddress",
    "EngineWorkers",
    "FitThreads",
    "MaxFailures",
    "ModelConfig",
    "ModelParams",
    "NoiseSeed",
    "Track",
]

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
Engine = Annotated[
    str,
    typer.Option(
        help="Where the data-parallel work runs: local (this process) or ray (tasks over user "
        "partitions on a Ray cluster; pip install 'privrank[ray]')."
    ),
]
EngineWorkers = Annotated[
    int,
    typer.Option(
        min=1,
        help="Ray tasks run at once, or Ray Train workers of SASRec and Mult-VAE (--engine ray); "
        "CPUs of a local Ray.",
    ),
]
EngineAddress = Annotated[
    str | None,
    typer.Option(help="Ray cluster address (--engine ray; default: a new local Ray instance)."),
]

MaxFailures = Annotated[
    int | None,
    typer.Option(
        help="Times a fit on Ray recovers from a lost worker (--engine ray; default 2): Ray "
        "Train restarts of SASRec and Mult-VAE (resuming from the last epoch's checkpoint), "
        "restarts of each iALS actor. 0: a lost worker fails the fit.",
    ),
]


def make_engine(
    engine: str, workers: int, address: str | None, max_failures: int | None = None
) -> FitEngine | None:
    """The fit engine of ``--engine``: ``None`` for local, a ``RayEngine`` for ray.

    Args:
        engine: ``local`` or ``ray``.
        workers: ``--workers``.
        address: ``--address`` (``None``: a new local Ray instance).
        max_failures: ``--max-failures`` (``None``: the engine's default).

    Raises:
        ConfigError: An unknown engine, Ray options without ``--engine ray``, or a negative
            ``--max-failures``.
    """
    from privrank.errors import ConfigError

    if max_failures is not None and max_failures < 0:
        raise ConfigError(
            f"--max-failures must be an integer >= 0 (0: a lost worker fails the fit). "
            f"Got {max_failures}"
        )
    if engine == "local":
        if address is not None:
            raise ConfigError("--address names a Ray cluster: it needs --engine ray")
        if max_failures is not None:
            raise ConfigError(
                "--max-failures: recoveries from lost Ray workers; it needs --engine ray"
            )
        return None
    if engine != "ray":
        raise ConfigError(f"--engine must be local or ray. Got {engine!r}")
    from privrank.distributed import RayEngine

    if max_failures is None:
        return RayEngine(workers=workers, address=address)
    return RayEngine(workers=workers, address=address, max_failures=max_failures)
