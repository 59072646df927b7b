"""``privrank ads``: label-DP click models and private conversion measurement on ad logs.

- ``privrank ads train --log DIR --out DIR --epsilon E --budget-key KEY``: a LightGBM click
  model trained with label DP (RRWithPrior; ``--stages`` for multi-stage training), the user-level
  ``C·ε`` (``--max-rows-per-user C``) spent from the ledger; ``--epsilon inf`` is non-private.
- ``privrank ads measure --log DIR --out report.csv --epsilon E --budget-key KEY``: noisy
  conversion counts and values per campaign × conversion type (ARA/PPA-style contribution
  bound, Laplace noise), the user-level ε spent from the ledger.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError

from privrank.cli._console import make_console
from privrank.cli.app import app
from privrank.config_errors import config_error
from privrank.errors import ConfigError

__all__ = ["ads_app"]

ads_app = typer.Typer(help="Ads: label-DP click models and private conversion measurement.")
app.add_typer(ads_app, name="ads", no_args_is_help=True)

LedgerOption = Annotated[
    str | None, typer.Option("--ledger", help="Ledger database URL (default PRIVRANK_LEDGER_URL).")
]


def _epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--epsilon: got {text!r}; expected a number > 0 or 'inf'") from None
    if math.isnan(value) or value <= 0:
        raise ConfigError(f"--epsilon: got {text!r}; expected a number > 0 or 'inf'")
    return value


@ads_app.command("train")
def train(
    log: Annotated[Path, typer.Option(help="A synthetic ad log (privrank data synth-ads).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")],
    epsilon: Annotated[str, typer.Option(help="ε per example's label, or 'inf'.")],
    budget_key: Annotated[
        str | None, typer.Option(help="Ledger key to spend the user-level C·ε from.")
    ] = None,
    stages: Annotated[int, typer.Option(help="Stages of LP-MST (1: plain RR).")] = 1,
    max_rows_per_user: Annotated[
        int, typer.Option(help="C: rows kept per user (their first); the ledger is charged C·ε.")
    ] = 20,
    max_rows: Annotated[int | None, typer.Option(help="Read only the first rows.")] = None,
    trees: Annotated[int, typer.Option(help="LightGBM boosting rounds.")] = 300,
    leaves: Annotated[int, typer.Option(help="LightGBM leaves per tree.")] = 15,
    min_data_in_leaf: Annotated[int, typer.Option(help="LightGBM min rows per leaf.")] = 2000,
    learning_rate: Annotated[float, typer.Option(help="LightGBM learning rate.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the row order and of LightGBM.")] = 0,
    ledger: LedgerOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model directory.")] = False,
) -> None:
    """Train a LightGBM click model with label DP and spend C·ε from the ledger."""
    from privrank.ranking.gbdt_click import GBDTClickConfig
    from privrank.workflow.label_dp_training import stage_fractions, train_click_model

    eps = _epsilon(epsilon)
    stage_fractions(stages)
    if max_rows_per_user < 1:
        raise ConfigError(f"--max-rows-per-user: got {max_rows_per_user}; expected an int >= 1")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    options = {"--trees": "n_estimators", "--leaves": "num_leaves"}
    try:
        config = GBDTClickConfig(
            n_estimators=trees,
            num_leaves=leaves,
            min_data_in_leaf=min_data_in_leaf,
            learning_rate=learning_rate,
            seed=seed,
        )
    except ValidationError as exc:
        names = {field: option for option, field in options.items()}
        raise config_error(exc, "GBDTClickConfig", model=GBDTClickConfig, options=names) from exc
    console = make_console()

    def on_stage(report) -> None:  # type: ignore[no-untyped-def]
        console.print(
            f"  stage {report.stage}: {report.rows:,} rows randomised, noisy = true label for "
            f"{report.agreement:.3f}, mean k* {report.mean_k:.3f}",
            highlight=False,
        )

    result = train_click_model(
        log,
        out,
        epsilon=eps,
        stages=stages,
        max_rows_per_user=max_rows_per_user,
        max_rows=max_rows,
        budget_key=budget_key,
        ledger_url=ledger,
        config=config,
        seed=seed,
        on_stage=on_stage,
    )
    console.print(
        f"trained on {result.rows:,} rows ({result.dropped:,} left out by the cap of "
        f"{max_rows_per_user} rows a user) in {result.seconds:.1f} s",
        highlight=False,
    )
    if result.guarantee is None:
        console.print("NOT private: trained on the true labels (ε = inf); nothing spent")
    else:
        console.print(result.guarantee.describe(), highlight=False)
        if result.spend is not None:
            console.print(
                f"spent ε={result.spend.epsilon:g}, δ=0 from {result.spend.ledger_key!r} "
                f"(spend {result.spend.spend_id})",
                highlight=False,
            )
    console.print(f"wrote {out}")


@ads_app.command("measure")
def measure(
    log: Annotated[Path, typer.Option(help="A synthetic ad log (privrank data synth-ads).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report CSV to write.")],
    epsilon: Annotated[float, typer.Option(help="ε per unit (per conversion or per user).")],
    budget_key: Annotated[str, typer.Option(help="Ledger key to spend the user-level ε from.")],
    unit: Annotated[
        str, typer.Option(help="conversion (PPA: ε per conversion) or user (ARA: one budget).")
    ] = "conversion",
    max_conversions_per_user: Annotated[
        int, typer.Option(help="C: conversions kept per user (their first).")
    ] = 4,
    l1_budget: Annotated[float, typer.Option(help="L1 contribution budget.")] = 65_536.0,
    value_cap: Annotated[float, typer.Option(help="Values above are clipped.")] = 500.0,
    count_share: Annotated[float, typer.Option(help="Share of the budget on counts.")] = 0.5,
    max_rows: Annotated[int | None, typer.Option(help="Read only the first rows.")] = None,
    ledger: LedgerOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing report.")] = False,
) -> None:
    """Noisy conversion counts and values per campaign × type, spent from the ledger."""
    from privrank.privacy.conversion_reports import ConversionReportConfig
    from privrank.workflow.conversion_measurement import measure_conversions

    fields: dict[str, object] = {
        "epsilon": epsilon,
        "unit": unit,
        "max_conversions_per_user": max_conversions_per_user,
        "l1_budget": l1_budget,
        "value_cap": value_cap,
        "count_share": count_share,
    }
    try:
        config = ConversionReportConfig.model_validate(fields)
    except ValidationError as exc:
        names = {name: "--" + name.replace("_", "-") for name in fields}
        raise config_error(
            exc, "ConversionReportConfig", model=ConversionReportConfig, options=names
        ) from exc
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    report, spend = measure_conversions(
        log, out, config, budget_key=budget_key, ledger_url=ledger, max_rows=max_rows
    )
    console = make_console()
    kind: Literal["conversion", "user"] = config.unit
    console.print(
        f"report of {report.count.size:,} keys: Laplace scale {config.noise_scale:g} on each "
        f"bucket (ε={config.epsilon:g} per {kind}); {report.dropped:,} conversions left out by "
        f"the cap, {report.clipped:,} values clipped at {config.value_cap:g}",
        highlight=False,
    )
    console.print(
        f"spent user-level ε={spend.epsilon:g}, δ=0 from {spend.ledger_key!r} "
        f"(spend {spend.spend_id})",
        highlight=False,
    )
    console.print(f"wrote {out}")
