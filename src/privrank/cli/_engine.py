"""The ``--engine`` switch of the data commands: one process (default) or Ray Data.

``privrank data import --engine ray`` and ``privrank data split --engine ray`` give the same
dataset and split as the default engine (:mod:`privrank.distributed.ray_data`), streaming over
partitions so that no process holds the whole data.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from privrank.errors import ConfigError

__all__ = [
    "Engine",
    "EngineOption",
    "PartRowsOption",
    "RayAddressOption",
    "RayCpusOption",
    "StagingOption",
    "ray_options",
]


class Engine(StrEnum):
    """Where a data command runs."""

    local = "local"
    ray = "ray"


EngineOption = Annotated[
    Engine,
    typer.Option(
        help="local: one process. ray: Ray Data over partitions (same result, bounded memory)."
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        envvar="RAY_ADDRESS",
        help="Ray cluster for --engine ray (default: a local Ray instance).",
    ),
]
RayCpusOption = Annotated[
    int | None, typer.Option(help="CPUs of the local Ray instance (--engine ray).")
]
PartRowsOption = Annotated[
    int | None, typer.Option(help="Rows per Ray task (--engine ray; default 2,000,000).")
]
StagingOption = Annotated[
    Path | None,
    typer.Option(
        help="Directory for intermediate files, seen by every node (--engine ray; default: "
        "next to the output)."
    ),
]


def ray_options(
    engine: Engine,
    *,
    address: str | None,
    num_cpus: int | None,
    part_rows: int | None,
    staging_dir: Path | None,
):  # -> RayDataOptions | None (imported lazily: the distributed layer)
    """The Ray engine's options, or ``None`` for the local engine (Ray options then refused)."""
    given = {
        "--ray-cpus": num_cpus,
        "--part-rows": part_rows,
        "--staging-dir": staging_dir,
    }
    if engine is Engine.local:
        extra = [flag for flag, value in given.items() if value is not None]
        if extra:
            raise ConfigError(f"{', '.join(extra)}: only with --engine ray")
        return None
    from privrank.distributed.ray_data import RayDataOptions

    params: dict[str, object] = {"address": address}
    if num_cpus is not None:
        params["num_cpus"] = num_cpus
    if part_rows is not None:
        params["part_rows"] = part_rows
    if staging_dir is not None:
        params["staging_dir"] = staging_dir
    return RayDataOptions(**params)
