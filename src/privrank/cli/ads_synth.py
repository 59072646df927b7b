"""``privrank data synth-ads``: write a synthetic ad log whose click probabilities are known."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from privrank.cli._console import make_console, progress
from privrank.cli.app import data_app
from privrank.data.synthetic_ads import AdLogConfig, ad_log_config, read_ad_log, write_ad_log
from privrank.errors import ConfigError

__all__ = ["synth_ads"]

_D = {name: field.default for name, field in AdLogConfig.model_fields.items()}


@data_app.command("synth-ads")
def synth_ads(
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination directory.")],
    impressions: Annotated[int, typer.Option(help="Impressions (rows).")] = _D["n_impressions"],
    users: Annotated[int, typer.Option(help="Users.")] = _D["n_users"],
    ads: Annotated[int, typer.Option(help="Ads.")] = _D["n_ads"],
    campaigns: Annotated[int, typer.Option(help="Campaigns.")] = _D["n_campaigns"],
    advertisers: Annotated[int, typer.Option(help="Advertisers.")] = _D["n_advertisers"],
    contexts: Annotated[int, typer.Option(help="Contexts (sites, apps).")] = _D["n_contexts"],
    positions: Annotated[int, typer.Option(help="Ad slots per page.")] = _D["n_positions"],
    conversion_rate: Annotated[
        float, typer.Option(help="Mean conversion probability of a click.")
    ] = _D["conversion_rate"],
    chunk_rows: Annotated[int, typer.Option(help="Rows per Parquet part.")] = _D["chunk_rows"],
    seed: Annotated[int, typer.Option(help="Random seed.")] = _D["seed"],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing destination.")] = False,
) -> None:
    """Write a synthetic ad log: users, ads, campaigns, advertisers, contexts, position bias,
    a logistic click model with user×ad interaction (``p_click`` per row) and conversions
    attributed to clicks, as chunked Parquet (bounded memory), seeded and reproducible."""
    config = ad_log_config(
        n_impressions=impressions,
        n_users=users,
        n_ads=ads,
        n_campaigns=campaigns,
        n_advertisers=advertisers,
        n_contexts=contexts,
        n_positions=positions,
        conversion_rate=conversion_rate,
        chunk_rows=chunk_rows,
        seed=seed,
    )
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    started = time.perf_counter()
    with progress("synth", f"writing {out.name}", unit="rows") as bar:
        write_ad_log(config, out, progress=lambda done, _: bar.update(done, config.n_impressions))
    console = make_console()
    seconds = time.perf_counter() - started
    summary = read_ad_log(out, ["click", "conversion"])
    clicks = int(summary.column("click").to_numpy().sum())
    conversions = int(summary.column("conversion").to_numpy().sum())
    console.print(
        f"wrote {out}: {config.n_impressions:,} impressions, {clicks:,} clicks "
        f"(CTR {clicks / config.n_impressions:.4f}), {conversions:,} conversions "
        f"in {seconds:.1f} s",
        soft_wrap=True,
    )
