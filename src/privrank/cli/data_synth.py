"""``privrank data synth``: generate a synthetic interaction data set or ratings CSV."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from privrank.cli._console import make_console, progress, status
from privrank.cli.app import data_app
from privrank.config_errors import config_error
from privrank.data.stats import dataset_stats, stats_table
from privrank.data.synthetic import SyntheticConfig, generate, write_ratings_csv
from privrank.errors import ConfigError

__all__ = ["SynthFormat", "config_from_options", "synth"]

_DEFAULTS = {name: field.default for name, field in SyntheticConfig.model_fields.items()}
_DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]
_DEFAULT_START = _DEFAULTS["start_time"].replace(tzinfo=None)
_DEFAULT_END = _DEFAULTS["end_time"].replace(tzinfo=None)
#: Config field -> parameter of :func:`synth` (its option is ``--`` + the name, dashed).
_OPTIONS = {
    "n_users": "users",
    "n_items": "items",
    "n_interactions": "interactions",
    "n_clusters": "clusters",
    "popularity_exponent": "popularity_exponent",
    "cluster_affinity": "affinity",
    "activity_sigma": "activity_sigma",
    "min_user_interactions": "min_per_user",
    "max_user_interactions": "max_per_user",
    "unique_pairs": "unique_pairs",
    "mean_session_length": "session_length",
    "between_session_gap": "session_gap",
    "within_session_gap": "click_gap",
    "start_time": "start",
    "end_time": "end",
    "seed": "seed",
}


class SynthFormat(StrEnum):
    """What ``privrank data synth`` writes."""

    dataset = "dataset"  # a privrank dataset directory (Parquet + metadata.json)
    csv = "csv"  # a MovieLens-20M style ratings.csv


def config_from_options(
    options: dict[str, object], names: dict[str, str] | None = None
) -> SyntheticConfig:
    """Build a :class:`SyntheticConfig`, turning validation errors into one :class:`ConfigError`.

    Args:
        options: Fields of :class:`SyntheticConfig`.
        names: The command-line option of each field, named in the message before the field.

    Raises:
        ConfigError: Naming every invalid field, its value and the rule it breaks
            (:mod:`privrank.config_errors`).
    """
    try:
        return SyntheticConfig.model_validate(options)
    except ValidationError as exc:
        raise config_error(exc, "SyntheticConfig", model=SyntheticConfig, options=names) from exc


@data_app.command("synth")
def synth(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Destination: a dataset directory, or a .csv file with --format csv.",
        ),
    ],
    users: Annotated[int, typer.Option(help="Users.")] = _DEFAULTS["n_users"],
    items: Annotated[int, typer.Option(help="Items.")] = _DEFAULTS["n_items"],
    interactions: Annotated[int, typer.Option(help="Interactions (rows), exactly.")] = _DEFAULTS[
        "n_interactions"
    ],
    clusters: Annotated[int, typer.Option(help="Latent user/item clusters.")] = _DEFAULTS[
        "n_clusters"
    ],
    popularity_exponent: Annotated[
        float, typer.Option(help="Zipf exponent of item popularity (weight of rank r: r^-a).")
    ] = _DEFAULTS["popularity_exponent"],
    affinity: Annotated[
        float, typer.Option(help="Probability that a draw stays in the user's cluster.")
    ] = _DEFAULTS["cluster_affinity"],
    activity_sigma: Annotated[
        float, typer.Option(help="Spread (sigma) of the log-normal user activity.")
    ] = _DEFAULTS["activity_sigma"],
    min_per_user: Annotated[
        int, typer.Option(help="Interactions every user gets at least.")
    ] = _DEFAULTS["min_user_interactions"],
    max_per_user: Annotated[int | None, typer.Option(help="Cap on interactions per user.")] = None,
    unique_pairs: Annotated[
        bool,
        typer.Option("--unique-pairs/--allow-repeats", help="Whether a user may repeat an item."),
    ] = _DEFAULTS["unique_pairs"],
    session_length: Annotated[
        float, typer.Option(help="Mean session length (interactions).")
    ] = _DEFAULTS["mean_session_length"],
    session_gap: Annotated[
        float, typer.Option(help="Mean seconds between two sessions of a user.")
    ] = _DEFAULTS["between_session_gap"],
    click_gap: Annotated[
        float, typer.Option(help="Mean seconds between interactions of one session.")
    ] = _DEFAULTS["within_session_gap"],
    start: Annotated[
        datetime, typer.Option(formats=_DATE_FORMATS, help="Start of the time range (UTC).")
    ] = _DEFAULT_START,
    end: Annotated[
        datetime, typer.Option(formats=_DATE_FORMATS, help="End of the time range (UTC).")
    ] = _DEFAULT_END,
    seed: Annotated[int, typer.Option(help="Random seed.")] = _DEFAULTS["seed"],
    output_format: Annotated[
        SynthFormat, typer.Option("--format", help="What to write.")
    ] = SynthFormat.dataset,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing destination.")] = False,
) -> None:
    """Generate synthetic interactions: power-law popularity, clusters, sessions, ratings.

    Writes a privrank dataset directory (default) or a MovieLens-20M style ratings.csv
    (userId,movieId,rating,timestamp; 1-based ids), then prints its statistics.
    """
    given = locals()
    config = config_from_options(
        {field: given[option] for field, option in _OPTIONS.items()},
        {field: "--" + option.replace("_", "-") for field, option in _OPTIONS.items()},
    )
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    if output_format is SynthFormat.csv and out.is_dir():
        raise ConfigError(f"{out} is a directory; --format csv writes a file")
    if output_format is SynthFormat.dataset and out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --format dataset writes a directory")

    with progress("synth", f"generating {out.name}", unit="rows") as bar:
        data = generate(config, progress=bar.update)
    if output_format is SynthFormat.csv:
        with progress("synth", f"writing {out.name}", unit="rows") as bar:
            write_ratings_csv(data, out, progress=bar.update)
    else:
        with status(f"saving {out}"):
            data.save(out)
    console = make_console()
    console.print(stats_table(dataset_stats(data)))
    console.print(f"wrote {out} ({output_format.value})")
