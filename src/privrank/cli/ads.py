"""``privrank ads``: label-DP click models and private conversion measurement on ad logs.

- ``privrank ads train --log DIR --out DIR --epsilon E --budget-key KEY``: a LightGBM click
  model trained with label DP (RRWithPrior; ``--stages`` for multi-stage training), the user-level
  ``C·ε`` (``--max-rows-per-user C``) spent from the ledger; ``--epsilon inf`` is non-private.
- ``privrank ads train --mechanism dp-sgd --model fm --epsilon E --delta D --budget-key KEY``:
  a neural CTR ranker (``fm``, ``deepfm``, ``dcn-v2``, ``finalmlp``, ``logistic``) trained by
  user-level DP-SGD (unit of privacy: all rows of one user; at most ``--max-rows-per-user``
  rows a user), (ε, δ) spent from the ledger; a 5 % panel of users is held out of training
  for progress and calibration (not covered by the guarantee).
- ``privrank ads train --mechanism label-sums --epsilon E --budget-key KEY``: logistic regression
  fitted on the per-column label sums released once with Laplace noise (ε-label-DP per example,
  ``C·ε`` per user spent from the ledger; ``--sums-fields``, ``--sums-crosses``,
  ``--sums-min-count``, ``--sums-l2``); servable by ``privrank serve --ads-model``.
- ``privrank ads train --stream --epsilon inf --model fm|lightgbm``: a non-private click model
  trained on the log read part by part (10M+ rows in bounded memory: the rows are never held
  together; :mod:`privrank.workflow.streamed_click_training`); the last ``--validation-rows`` of
  the window are the validation part; prints rows/s and the peak resident memory.
  ``--stream --model lightgbm --epsilon E --budget-key KEY``: the same with label DP (every
  training click randomised once at ε, one stage), ``C·ε`` spent from the ledger.
- ``privrank ads measure --log DIR --out report.csv --epsilon E --budget-key KEY``: noisy
  conversion counts and values per campaign × conversion type (ARA/PPA-style contribution
  bound, Laplace noise), the user-level ε spent from the ledger.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from pydantic import ValidationError

from privrank.cli._console import make_console
from privrank.cli.app import app
from privrank.config_errors import config_error
from privrank.errors import ConfigError

if TYPE_CHECKING:  # the models import is heavy: the CLI loads it when a command runs
    from rich.console import Console

    from privrank.models import FitProgress

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
    epsilon: Annotated[
        str, typer.Option(help="label-rr-prior: ε per example's label, or 'inf'; dp-sgd: user ε.")
    ],
    mechanism: Annotated[
        Literal["label-rr-prior", "label-sums", "dp-sgd"],
        typer.Option(
            help="label-rr-prior (LightGBM, label DP), label-sums (logistic regression on "
            "Laplace-noised label sums, label DP) or dp-sgd (neural, user-level)."
        ),
    ] = "label-rr-prior",
    model: Annotated[
        str, typer.Option(help="dp-sgd: the CTR ranker (fm, deepfm, dcn-v2, finalmlp, logistic).")
    ] = "fm",
    delta: Annotated[
        float | None, typer.Option(help="dp-sgd: δ (default 1/(10·training users)).")
    ] = None,
    clipping_norm: Annotated[float, typer.Option(help="dp-sgd: per-user clipping norm C.")] = 1.0,
    param: Annotated[
        list[str] | None, typer.Option(help="dp-sgd: ranker parameter KEY=JSON (repeatable).")
    ] = None,
    budget_key: Annotated[
        str | None, typer.Option(help="Ledger key to spend the user-level C·ε from.")
    ] = None,
    stages: Annotated[int, typer.Option(help="Stages of LP-MST (1: plain RR).")] = 1,
    label_method: Annotated[
        str,
        typer.Option(
            help="Label DP: lp-mst (RRWithPrior in --stages stages) or rr-posterior (RR, then "
            "soft labels: each row's posterior under a prior cross-fitted on --folds folds)."
        ),
    ] = "lp-mst",
    folds: Annotated[int, typer.Option(help="rr-posterior: folds of the cross-fitted prior.")] = 2,
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
    stream: Annotated[
        bool,
        typer.Option(
            help="Fit --model (fm, ..., or lightgbm) on the log read part by part: bounded "
            "memory for 10M+ rows. Label DP (finite --epsilon) with lightgbm only."
        ),
    ] = False,
    validation_rows: Annotated[
        int | None, typer.Option(help="--stream: last rows held out (default 5 %, ≤ 200k).")
    ] = None,
    sums_fields: Annotated[
        str | None,
        typer.Option(help="label-sums: comma-separated feature columns (default: 6 fields)."),
    ] = None,
    sums_crosses: Annotated[
        str, typer.Option(help="label-sums: comma-separated crosses A*B of two fields.")
    ] = "",
    sums_min_count: Annotated[
        int, typer.Option(help="label-sums: rows a value needs for its own column.")
    ] = 50,
    sums_l2: Annotated[
        float,
        typer.Option(help="label-sums: L2 penalty λ₀ (the whole penalty of a non-private fit)."),
    ] = 1.0,
    sums_noise_ridge: Annotated[
        float,
        typer.Option(
            help="label-sums: c of the private fit's extra penalty c·2(Δ/ε)²/τ̂², τ̂² read off "
            "the noisy sums (0.03: chosen on validation carves of the synthetic log and frappe; "
            "0: off)."
        ),
    ] = 0.03,
) -> None:
    """Train a click model privately (label DP or user-level DP-SGD), spending from the ledger."""
    if stream:
        _train_streamed(
            log, out, epsilon, mechanism, model, max_rows, max_rows_per_user, validation_rows,
            param or [], trees, leaves, min_data_in_leaf, learning_rate, seed, overwrite,
            budget_key, ledger,
        )  # fmt: skip
        return
    if mechanism == "label-sums":
        _train_label_sums(
            log, out, epsilon, budget_key, sums_fields, sums_crosses, sums_min_count, sums_l2,
            sums_noise_ridge, max_rows_per_user, max_rows, ledger, overwrite,
        )  # fmt: skip
        return
    if mechanism == "dp-sgd":
        _train_dpsgd(
            log, out, epsilon, budget_key, model, delta, max_rows_per_user, clipping_norm,
            max_rows, param or [], seed, ledger, overwrite,
        )  # fmt: skip
        return
    from privrank.ranking.gbdt_click import GBDTClickConfig
    from privrank.workflow.label_dp_training import stage_fractions, train_click_model

    eps = _epsilon(epsilon)
    stage_fractions(stages)
    if label_method not in ("lp-mst", "rr-posterior"):
        raise ConfigError(f"--label-method: got {label_method!r}; expected lp-mst or rr-posterior")
    if label_method == "rr-posterior" and folds < 2:
        raise ConfigError(f"--folds: got {folds}; expected an int >= 2")
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
        method=label_method,  # type: ignore[arg-type]
        folds=folds,
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


def _train_dpsgd(
    log: Path, out: Path, epsilon: str, budget_key: str | None, model: str,
    delta: float | None, max_rows_per_user: int, clipping_norm: float, max_rows: int | None,
    params: list[str], seed: int, ledger: str | None, overwrite: bool,
) -> None:  # fmt: skip
    from privrank.workflow.dpsgd_ctr_training import train_dpsgd_click_model

    eps = _epsilon(epsilon)
    if math.isinf(eps):
        raise ConfigError("--mechanism dp-sgd: got --epsilon inf; expected a finite ε > 0")
    if not budget_key:
        raise ConfigError("--mechanism dp-sgd spends from the ledger: pass --budget-key")
    if max_rows_per_user < 1:
        raise ConfigError(f"--max-rows-per-user: got {max_rows_per_user}; expected an int >= 1")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    parsed = _parse_params(params)
    console = make_console()
    progress = _epoch_printer(console)
    result = train_dpsgd_click_model(
        log, out, epsilon=eps, budget_key=budget_key, model=model, delta=delta,
        max_rows_per_user=max_rows_per_user, clipping_norm=clipping_norm, max_rows=max_rows,
        params=parsed, ledger_url=ledger, seed=seed, progress=progress,
    )  # fmt: skip
    facts = result.facts
    console.print(
        f"trained on {facts['rows_kept']:,} rows of {facts['users']:,} users "
        f"({facts['rows_dropped_by_bound']:,} left out by the cap of {max_rows_per_user} rows a "
        f"user; {facts['validation_rows']:,} panel rows for validation) in "
        f"{result.seconds:.1f} s",
        highlight=False,
    )
    console.print(result.guarantee.describe(), highlight=False)
    console.print(
        f"spent ε={result.spend.epsilon:g}, δ={result.spend.delta:.3g} from "
        f"{result.spend.ledger_key!r} (spend {result.spend.spend_id})",
        highlight=False,
    )
    console.print(f"wrote {out}")


def _train_label_sums(
    log: Path, out: Path, epsilon: str, budget_key: str | None, fields: str | None,
    crosses: str, min_count: int, l2: float, noise_ridge: float, max_rows_per_user: int,
    max_rows: int | None, ledger: str | None, overwrite: bool,
) -> None:  # fmt: skip
    from privrank.ranking.label_sums_logistic import LabelSumsConfig
    from privrank.workflow.label_sums_training import (
        DEFAULT_SUMS_FIELDS,
        describe_guarantee,
        train_label_sums_model,
    )

    eps = _epsilon(epsilon)
    if math.isfinite(eps) and not budget_key:
        raise ConfigError("--mechanism label-sums --epsilon: a label-DP fit spends from the "
                          "ledger: pass --budget-key")  # fmt: skip
    if max_rows_per_user < 1:
        raise ConfigError(f"--max-rows-per-user: got {max_rows_per_user}; expected an int >= 1")
    names = tuple(DEFAULT_SUMS_FIELDS if fields is None else fields.split(","))
    pairs = []
    for item in (c for c in crosses.split(",") if c):
        left, sep, right = item.partition("*")
        if not sep or not left or not right or "*" in right:
            raise ConfigError(f"--sums-crosses: got {item!r}; expected A*B (two field names)")
        pairs.append((left, right))
    options = {
        "min_count": "--sums-min-count",
        "l2": "--sums-l2",
        "noise_ridge": "--sums-noise-ridge",
        "crosses": "--sums-crosses",
    }
    try:
        config = LabelSumsConfig(
            crosses=tuple(pairs), min_count=min_count, l2=l2, noise_ridge=noise_ridge
        )
    except ValidationError as exc:
        raise config_error(exc, "LabelSumsConfig", model=LabelSumsConfig, options=options) from exc
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    result = train_label_sums_model(
        log, out, epsilon=eps, config=config, fields=names, max_rows_per_user=max_rows_per_user,
        max_rows=max_rows, budget_key=budget_key, ledger_url=ledger,
    )  # fmt: skip
    console = make_console()
    console.print(
        f"trained label-sums logistic regression on {result.rows:,} rows ({result.dropped:,} "
        f"left out by the cap of {max_rows_per_user} rows a user) in {result.seconds:.1f} s",
        highlight=False,
    )
    guarantee = result.model.guarantee_
    if guarantee is None:
        console.print("NOT private: fitted on the exact label sums (ε = inf); nothing spent")
    else:
        console.print(describe_guarantee(guarantee, max_rows_per_user), highlight=False)
        if result.spend is not None:
            console.print(
                f"spent ε={result.spend.epsilon:g}, δ=0 from {result.spend.ledger_key!r} "
                f"(spend {result.spend.spend_id})",
                highlight=False,
            )
    console.print(f"wrote {out}")


def _parse_params(params: list[str]) -> dict[str, object]:
    import json

    parsed: dict[str, object] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param: got {item!r}; expected KEY=VALUE")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def _epoch_printer(console: Console) -> Callable[[FitProgress], None]:
    """A click model's per-epoch line: training loss, validation log loss and AUC, seconds."""

    def progress(p: FitProgress) -> None:
        console.print(
            f"  epoch {p.epoch}/{p.epochs}: loss {p.loss:.4f}, validation log loss "
            f"{p.metrics.get('val_log_loss', float('nan')):.4f}, AUC "
            f"{p.metrics.get('val_auc', float('nan')):.4f} ({p.elapsed_s:.0f} s)",
            highlight=False,
        )

    return progress


def _train_streamed(
    log: Path, out: Path, epsilon: str, mechanism: str, model: str, max_rows: int | None,
    max_rows_per_user: int, validation_rows: int | None, params: list[str], trees: int,
    leaves: int, min_data_in_leaf: int, learning_rate: float, seed: int, overwrite: bool,
    budget_key: str | None = None, ledger: str | None = None,
) -> None:  # fmt: skip
    from privrank.ranking.gbdt_click import GBDTClickConfig
    from privrank.workflow.streamed_click_training import train_click_model_streamed

    eps = _epsilon(epsilon)
    if mechanism != "label-rr-prior":
        raise ConfigError(
            f"--stream: got --mechanism {mechanism}; a streamed fit is non-private or label-DP "
            "(label-rr-prior); DP-SGD fits read the log without --stream"
        )
    if not math.isinf(eps) and model != "lightgbm":
        raise ConfigError(
            f"--stream --epsilon {epsilon}: label DP on streamed rows trains --model lightgbm "
            f"only; got --model {model}"
        )
    if not math.isinf(eps) and not budget_key:
        raise ConfigError(
            "--stream --epsilon: a label-DP fit spends from the ledger: pass --budget-key"
        )
    if max_rows_per_user < 1:
        raise ConfigError(f"--max-rows-per-user: got {max_rows_per_user}; expected an int >= 1")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    gbdt = None
    if model == "lightgbm":
        if params:
            raise ConfigError("--param: LightGBM takes --trees, --leaves, --min-data-in-leaf")
        try:
            gbdt = GBDTClickConfig(
                n_estimators=trees, num_leaves=leaves, min_data_in_leaf=min_data_in_leaf,
                learning_rate=learning_rate, seed=seed,
            )  # fmt: skip
        except ValidationError as exc:
            raise config_error(exc, "GBDTClickConfig", model=GBDTClickConfig) from exc
    console = make_console()
    progress = _epoch_printer(console)
    result = train_click_model_streamed(
        log, out, model=model, max_rows=max_rows, max_rows_per_user=max_rows_per_user,
        validation_rows=validation_rows, params=_parse_params(params), gbdt=gbdt, seed=seed,
        progress=progress, epsilon=eps, budget_key=budget_key, ledger_url=ledger,
    )  # fmt: skip
    console.print(
        f"streamed {model} on {result.train_rows:,} rows ({result.dropped:,} left out by the cap "
        f"of {max_rows_per_user} rows a user), {result.epochs} epoch(s) in "
        f"{result.fit_seconds:.1f} s ({result.rows_per_second:,.0f} rows/s; planning pass "
        f"{result.plan_seconds:.1f} s); validation ({result.validation_rows:,} rows) AUC "
        f"{result.validation_auc:.4f}, log loss {result.validation_log_loss:.4f}; peak RSS "
        f"{result.peak_rss_mib:,.0f} MiB",
        highlight=False,
    )
    if result.label_dp is None:
        console.print("NOT private: trained on the true labels; nothing spent")
    else:
        console.print(result.label_dp.describe(), highlight=False)
        console.print(
            f"spent ε={result.label_dp.user_epsilon:g} (δ=0) from {budget_key}; noisy labels "
            f"agree with the true ones on {result.label_agreement:.3f} of the rows; the "
            "validation figures use true labels of held-out rows (not covered)",
            highlight=False,
        )
    console.print(f"wrote {out}")
