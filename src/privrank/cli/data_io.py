"""``privrank data import | validate | stats``: bring interaction files into the workspace.

``import`` reads a catalog data set (``ml-100k``, ``beauty``, ...) or a file, validates it
(strict by default: any bad line refuses the whole file, exit code 2, nothing written), applies
the requested curation steps, and saves the result atomically under
``$PRIVRANK_HOME/datasets/<name>``. ``validate`` only checks a file. ``stats`` describes a saved
data set (the last import by default).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from privrank.cli._console import make_console, progress, styled
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
from privrank.config_errors import config_error
from privrank.data import catalog
from privrank.data.curation import CurationConfig, curate
from privrank.data.interactions import Interactions
from privrank.data.readers import FORMATS, ReadOptions, read_interactions, validate_file
from privrank.data.stats import dataset_stats, stats_table
from privrank.data.workspace import dataset_path, remember_import
from privrank.errors import ConfigError, DataError
from privrank.settings import datasets_dir

__all__ = ["import_command", "stats_command", "validate_command"]

console = make_console()

Format = StrEnum("Format", {name: name for name in FORMATS})  # type: ignore[misc]


class OnError(StrEnum):
    """What to do with bad lines."""

    strict = "strict"
    quarantine = "quarantine"


class Duplicates(StrEnum):
    """Policy for repeated (user, item) pairs."""

    keep = "keep"
    first = "first"
    last = "last"
    sum = "sum"


class CapStrategy(StrEnum):
    """Which rows a per-user cap keeps."""

    most_recent = "most_recent"
    uniform = "uniform"


# Options shared by `import` and `validate`: how a generic table's columns are laid out.
UserCol = Annotated[str | None, typer.Option(help="User column: header name or 1-based position.")]
ItemCol = Annotated[str | None, typer.Option(help="Item column (csv/tsv/parquet).")]
TimeCol = Annotated[str | None, typer.Option(help="Timestamp column (csv/tsv/parquet).")]
ValueCol = Annotated[str | None, typer.Option(help="Value column (csv/tsv/parquet).")]
Header = Annotated[
    bool | None, typer.Option("--header/--no-header", help="Generic CSV/TSV header line.")
]
Delimiter = Annotated[str | None, typer.Option(help="Generic CSV/TSV separator.")]


def read_options(
    fmt: str,
    *,
    on_error: str = "strict",
    rejects: Path | None = None,
    name: str | None = None,
    columns: dict[str, str | None] | None = None,
    has_header: bool | None = None,
    delimiter: str | None = None,
) -> ReadOptions:
    """Build :class:`ReadOptions` from command-line values (``ConfigError`` when invalid)."""
    mapping = {k: _column(v) for k, v in (columns or {}).items() if v is not None}
    params: dict[str, Any] = {"format": fmt, "on_error": on_error, **mapping}
    for key, value in (
        ("rejects_path", rejects),
        ("name", name),
        ("has_header", has_header),
        ("delimiter", delimiter),
    ):
        if value is not None:
            params[key] = value
    try:
        return ReadOptions(**params)
    except ValidationError as exc:
        flags = {k: _READ_OPTIONS.get(k, "--" + k.replace("_", "-")) for k in params}
        raise config_error(exc, "ReadOptions", model=ReadOptions, options=flags) from exc


#: Read options whose command-line option is not ``--`` + the option's name, dashed.
_READ_OPTIONS = {"rejects_path": "--rejects", "has_header": "--header/--no-header"}


def _table_layout(
    user_col: str | None,
    item_col: str | None,
    time_col: str | None,
    value_col: str | None,
    header: bool | None,
    delimiter: str | None,
) -> dict[str, Any]:
    """The :func:`read_options` keywords of the shared table-layout options."""
    return {
        "columns": {
            "user_col": user_col,
            "item_col": item_col,
            "time_col": time_col,
            "value_col": value_col,
        },
        "has_header": header,
        "delimiter": delimiter,
    }


def _column(value: str) -> str | int:
    return int(value) if value.isdigit() else value


@data_app.command("import")
def import_command(
    source: Annotated[str, typer.Argument(help="A catalog name (ml-100k, beauty, ...) or a file.")],
    fmt: Annotated[
        Format | None, typer.Option("--format", help="File format (catalog names know theirs).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name in the workspace.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: workspace).")] = None,
    on_error: Annotated[OnError, typer.Option(help="strict or quarantine.")] = OnError.strict,
    rejects: Annotated[Path | None, typer.Option(help="Rejects file (quarantine).")] = None,
    user_col: UserCol = None,
    item_col: ItemCol = None,
    time_col: TimeCol = None,
    value_col: ValueCol = None,
    header: Header = None,
    delimiter: Delimiter = None,
    duplicates: Annotated[
        Duplicates, typer.Option(help="Repeated (user, item) pairs.")
    ] = Duplicates.keep,
    min_value: Annotated[
        float | None, typer.Option(help="Implicit feedback: keep rows with value >= this.")
    ] = None,
    binarize: Annotated[bool, typer.Option(help="Drop the value column after --min-value.")] = (
        False
    ),
    k_core: Annotated[
        int | None, typer.Option(help="Iterated k-core: users and items with >= k rows.")
    ] = None,
    min_per_user: Annotated[int | None, typer.Option(help="Drop users with fewer rows.")] = None,
    max_per_user: Annotated[
        int | None, typer.Option(help="Contribution bound: keep at most this many rows per user.")
    ] = None,
    cap_strategy: Annotated[
        CapStrategy, typer.Option(help="Rows kept by --max-per-user.")
    ] = CapStrategy.most_recent,
    seed: Annotated[int, typer.Option(help="Seed of --cap-strategy uniform.")] = 0,
    since: Annotated[int | None, typer.Option(help="Keep rows with timestamp >= this.")] = None,
    until: Annotated[int | None, typer.Option(help="Keep rows with timestamp < this.")] = None,
    engine: EngineOption = Engine.local,
    ray_address: RayAddressOption = None,
    ray_cpus: RayCpusOption = None,
    part_rows: PartRowsOption = None,
    staging_dir: StagingOption = None,
) -> None:
    """Import, validate and curate interactions, then save them to the workspace.

    With --engine ray the source may also be a directory of Parquet files (--format parquet).
    """
    in_catalog = source in catalog.names()
    fmt_name, default_name = _source_format(source, None if fmt is None else fmt.value)
    name = name or default_name
    options = read_options(
        fmt_name,
        on_error=on_error.value,
        rejects=rejects,
        name=name,
        **_table_layout(user_col, item_col, time_col, value_col, header, delimiter),
    )
    curation = _curation_config(
        duplicates=duplicates.value,
        min_value=min_value,
        binarize=binarize,
        k_core=k_core,
        min_per_user=min_per_user,
        max_per_user=max_per_user,
        cap_strategy=cap_strategy.value,
        seed=seed,
        since=since,
        until=until,
    )
    ray_engine = ray_options(
        engine,
        address=ray_address,
        num_cpus=ray_cpus,
        part_rows=part_rows,
        staging_dir=staging_dir,
    )
    if ray_engine is not None:
        _import_on_ray(
            source, in_catalog, options, curation, ray_engine, out or datasets_dir() / name
        )
        return
    with progress("import", f"reading {source}", unit="bytes") as bar:
        if in_catalog:  # resolved, read and checked against the pinned SHA-256
            overrides = options.model_dump(exclude_unset=True, exclude={"format", "name"})
            overrides["name"] = name
            result = catalog.load(source, progress=bar.update, **overrides)
        else:
            result = read_interactions(source, options, progress=bar.update)
    data = result.interactions
    if result.rejected:
        console.print(
            styled(
                (f"quarantined {result.rejected:,} of {result.source_rows:,} lines", "yellow"),
                f" ({result.report.summary_counts()}); written to {result.rejects_path}",
            )
        )
    if curation is not None:
        data = curate(data, curation)
        _print_curation(data)
    destination = out or datasets_dir() / name
    data.save(destination)
    remember_import(destination)
    console.print(styled("imported ", (name, "bold"), f" → {destination}"))
    console.print(stats_table(dataset_stats(data)))


def _import_on_ray(source, in_catalog, options, curation, engine, destination) -> None:
    from privrank.distributed.ray_data import import_on_ray

    path, verify = Path(source), None
    if in_catalog:  # resolved as the local engine does, checked against the pinned SHA-256
        path = catalog.resolve(source)

        def verify(sha256: str) -> None:
            catalog.verify_sha256(source, path, sha256)

    result = import_on_ray(
        path, options, destination, curation=curation, engine=engine, verify_sha256=verify
    )
    remember_import(destination)
    steps = result.metadata.curation
    if steps:
        _print_steps(steps)
    console.print(
        styled(
            "imported ",
            (result.metadata.name, "bold"),
            f" → {destination} (Ray Data, {result.parts:,} part{'' if result.parts == 1 else 's'})",
        )
    )
    console.print(
        f"{result.rows:,} interactions, {result.users:,} users, {result.items:,} items",
        highlight=False,
    )


@data_app.command("validate")
def validate_command(
    file: Annotated[Path, typer.Argument(help="The file to check.")],
    fmt: Annotated[Format, typer.Option("--format", help="File format.")],
    user_col: UserCol = None,
    item_col: ItemCol = None,
    time_col: TimeCol = None,
    value_col: ValueCol = None,
    header: Header = None,
    delimiter: Delimiter = None,
) -> None:
    """Check a file without importing it; exit code 2 with every problem located if bad."""
    options = read_options(
        fmt.value,
        **_table_layout(user_col, item_col, time_col, value_col, header, delimiter),
    )
    report = validate_file(file, options)
    report.raise_for_problems()
    console.print(
        styled(("ok", "green"), f": {file} holds {report.source_rows:,} valid {fmt.value} lines")
    )


@data_app.command("stats")
def stats_command(
    dataset: Annotated[
        str | None, typer.Argument(help="Workspace name or dataset directory (default: last).")
    ] = None,
) -> None:
    """Users, items, interactions, density, Gini of item popularity, length quantiles."""
    path = dataset_path(dataset)
    data = Interactions.load(path)
    console.print(stats_table(dataset_stats(data)))
    _print_curation(data)


def _source_format(source: str, fmt: str | None) -> tuple[str, str]:
    """A catalog name or a file → (format, default workspace name)."""
    if source in catalog.names():
        entry = catalog.entry(source)
        if fmt is not None and fmt != entry.format:
            raise ConfigError(
                f"{source} is a catalog data set in format {entry.format!r}; got --format {fmt}"
            )
        return entry.format, source
    path = Path(source)
    if not path.exists():
        raise DataError(
            "no such file or catalog data set",
            path=path,
            expected=f"a file, or one of {', '.join(catalog.names())}",
        )
    if fmt is None:
        raise ConfigError(f"--format is needed for a file; one of {', '.join(FORMATS)}")
    return fmt, path.stem


def _curation_config(
    *,
    duplicates: str,
    min_value: float | None,
    binarize: bool,
    k_core: int | None,
    min_per_user: int | None,
    max_per_user: int | None,
    cap_strategy: str,
    seed: int,
    since: int | None,
    until: int | None,
) -> CurationConfig | None:
    params: dict[str, Any] = {}
    if since is not None or until is not None:
        params["time_window"] = {"start": since, "end": until}
    if duplicates != "keep":
        params["duplicates"] = duplicates
    if min_value is not None or binarize:
        params["threshold"] = {"min_value": min_value, "binarize": binarize}
    if k_core is not None:
        params["k_core"] = {"user_k": k_core, "item_k": k_core}
    if min_per_user is not None:
        params["min_per_user"] = min_per_user
    if max_per_user is not None:
        params["max_per_user"] = {"n": max_per_user, "strategy": cap_strategy, "seed": seed}
    return CurationConfig(**params) if params else None


def _print_curation(data: Interactions) -> None:
    steps = data.metadata.curation
    if not steps:
        return
    _print_steps(steps)


def _print_steps(steps) -> None:
    table = Table(title="curation")
    for column in ("step", "parameters", "rows before", "removed", "rows after"):
        table.add_column(
            column, justify="right" if "rows" in column or column == "removed" else "left"
        )
    for step in steps:
        table.add_row(
            step.name,
            ", ".join(f"{k}={v}" for k, v in step.params.items()),
            f"{step.rows_before:,}",
            f"{step.removed:,}",
            f"{step.rows_after:,}",
        )
    console.print(table)
