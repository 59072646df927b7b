"""``privrank data split``: split a saved dataset by a protocol and save the split next to it.

A thin layer over :func:`privrank.data.splits.split`: options are mapped onto one spec, options
that do not apply to the chosen protocol are refused (never silently ignored), and a table of
rows, users, items and unseen counts per part is printed.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from privrank.cli._console import make_console, status
from privrank.cli._engine import (
    Engine,
    EngineOption,
    PartRowsOption,
    RayAddressOption,
    RayCpusOption,
    StagingOption,
    ray_options,
)
from privrank.cli.app import data_app
from privrank.data.interactions import Interactions
from privrank.data.splits import Split, parse_split_spec, split
from privrank.data.workspace import dataset_path
from privrank.errors import ConfigError

__all__ = ["build_spec", "split_command"]


class Protocol(StrEnum):
    """The split protocols, as named on the command line."""

    holdout = "holdout"
    leave_last_out = "leave-last-out"
    temporal = "temporal"
    strong = "strong"


class Unseen(StrEnum):
    """What to do with evaluation rows whose user or item has no train row."""

    keep = "keep"
    drop = "drop"


# Which command-line options each protocol accepts.
_ACCEPTS = {
    Protocol.holdout: {"fraction", "seed"},
    Protocol.leave_last_out: {"k", "validation"},
    Protocol.temporal: {"fraction", "cut"},
    Protocol.strong: {"fraction", "seed", "fold_in_fraction"},
}


def build_spec(protocol: Protocol, unseen: Unseen = Unseen.keep, **options: Any) -> Any:
    """Map command-line options onto a split spec.

    ``--fraction`` is always the share that goes to test: per user for ``holdout``, the latest
    rows for ``temporal`` (quantile ``1 - fraction``), users held out for ``strong``. Options
    left at ``None`` take the spec's defaults; ``temporal`` defaults to ``--fraction 0.2``.

    Raises:
        ConfigError: An option that does not apply to the protocol, or an invalid value.
    """
    given = {name: value for name, value in options.items() if value is not None}
    refused = sorted(set(given) - _ACCEPTS[protocol])
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise ConfigError(f"{flags}: not an option of the {protocol.value} protocol")
    spec: dict[str, Any] = {"protocol": protocol.value, "unseen": unseen.value}
    if protocol is Protocol.temporal:
        if "cut" in given and "fraction" in given:
            raise ConfigError("--cut and --fraction: give one of them for the temporal protocol")
        if "cut" in given:
            spec["cut"] = given["cut"]
        else:
            fraction = given.get("fraction", 0.2)
            if not 0 < fraction < 1:
                raise ConfigError(f"--fraction: got {fraction}; must be in (0, 1)")
            spec["quantile"] = 1.0 - fraction
    elif protocol is Protocol.strong:
        if "fraction" in given:
            spec["test_fraction"] = given.pop("fraction")
        spec |= given
    else:
        spec |= given
    return parse_split_spec(spec)


@data_app.command("split")
def split_command(
    dataset: Annotated[
        str,
        typer.Argument(help="A workspace name or a dataset directory (`privrank data import`)."),
    ],
    protocol: Annotated[Protocol, typer.Option(help="Split protocol.")] = Protocol.holdout,
    fraction: Annotated[
        float | None,
        typer.Option(
            help="Share going to test (holdout: per user; temporal: latest rows; "
            "strong: users held out). Default 0.2."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (holdout, strong). Default 0.")] = None,
    k: Annotated[int | None, typer.Option(help="Test rows per user (leave-last-out).")] = None,
    validation: Annotated[
        bool | None,
        typer.Option(
            "--validation/--no-validation", help="Validation row (leave-last-out). Default on."
        ),
    ] = None,
    cut: Annotated[int | None, typer.Option(help="Cut timestamp (temporal).")] = None,
    fold_in_fraction: Annotated[
        float | None, typer.Option(help="Share of a held-out history to fold in (strong).")
    ] = None,
    unseen: Annotated[
        Unseen, typer.Option(help="Evaluation rows with users/items unseen in train.")
    ] = Unseen.keep,
    out: Annotated[
        Path | None, typer.Option(help="Output directory. Default DATASET_DIR/splits/PROTOCOL.")
    ] = None,
    engine: EngineOption = Engine.local,
    ray_address: RayAddressOption = None,
    ray_cpus: RayCpusOption = None,
    part_rows: PartRowsOption = None,
    staging_dir: StagingOption = None,
) -> None:
    """Split a saved dataset (holdout, leave-last-out, temporal or strong generalization)."""
    spec = build_spec(
        protocol,
        unseen,
        fraction=fraction,
        seed=seed,
        k=k,
        validation=validation,
        cut=cut,
        fold_in_fraction=fold_in_fraction,
    )
    dataset_dir = dataset_path(dataset)
    destination = out if out is not None else dataset_dir / "splits" / protocol.value
    console = make_console()
    ray_engine = ray_options(
        engine,
        address=ray_address,
        num_cpus=ray_cpus,
        part_rows=part_rows,
        staging_dir=staging_dir,
    )
    result: Split | Any
    if ray_engine is not None:
        from privrank.distributed.ray_data import split_on_ray

        with status(f"splitting {dataset_dir} on Ray Data ({protocol.value})"):
            result = split_on_ray(dataset_dir, spec, destination, engine=ray_engine)
    else:
        with status(f"loading {dataset_dir}"):
            data = Interactions.load(dataset_dir)
        with status(f"splitting {len(data):,} interactions ({protocol.value})"):
            result = split(data, spec)
        with status(f"writing {destination}"):
            result.save(destination)
    console.print(summary_table(result))
    for name, value in result.details.items():
        console.print(f"{name.replace('_', ' ')}: {value}", highlight=False)
    for name, counts in result.counts.items():
        if counts.pairs_in_train:
            console.print(
                f"note: {counts.pairs_in_train:,} {name} rows repeat a (user, item) pair that "
                "also has a train row; deduplicate before splitting to avoid this",
                highlight=False,
            )
    console.print(f"split written to {destination}", highlight=False, soft_wrap=True)


def summary_table(result: Any) -> Table:
    """A rich table of rows, users, items and unseen counts per part.

    ``result`` is a :class:`Split` or what the Ray engine returns (the same ``spec``,
    ``source`` and ``counts``).
    """
    params = result.spec.model_dump(exclude={"protocol"})
    title = f"{result.spec.protocol} split of {result.source.name} " + " ".join(
        f"{name}={value}" for name, value in params.items() if value is not None
    )
    table = Table(title=title)
    table.add_column("part", no_wrap=True, min_width=len("validation"))
    for column in ("rows", "users", "items", "unseen\nusers", "unseen\nitems", "unseen\nrows"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("dropped", justify="right", no_wrap=True)
    for name, counts in result.counts.items():
        table.add_row(
            name,
            f"{counts.rows:,}",
            f"{counts.users:,}",
            f"{counts.items:,}",
            f"{counts.unseen_users:,}",
            f"{counts.unseen_items:,}",
            f"{counts.unseen_rows:,}",
            f"{counts.dropped_rows:,}",
        )
    return table
