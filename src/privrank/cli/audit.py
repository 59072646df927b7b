"""``privrank audit``: test a private fit's (ε, δ) claim with canary users (one training run).

``privrank audit --model NAME --data DATASET --epsilon E --max-per-user C [--canaries M]
[--canary-items K] [--seed S] [--json OUT]`` inserts ``M`` canary users into the dataset, each
included with probability 1/2, trains ``NAME`` privately once, guesses which canaries were in
from the released model alone, and turns the number of correct guesses into a lower bound on ε
at 95 % confidence (Steinke, Nasr & Jagielski 2023; :mod:`privrank.workflow.audit`).

Exit codes: **0** the claim passed (lower bound ≤ claimed ε), **1** the audit found a violation
(lower bound > claimed ε: the fit is not (ε, δ)-DP, with 95 % confidence), **2** bad input.

The audited fit trains on the real data, so it spends its (ε, δ) from the privacy budget ledger
(key: the dataset's name; ledger: ``PRIVRANK_LEDGER_URL``), reserved before training and refused
with exit code 2 when the budget does not cover it (:func:`privrank.workflow.spend.fit_and_spend`).
``--no-ledger`` runs it without spending; the printed result and the JSON then say so.

``--break-noise-for-testing SCALE`` multiplies the mechanism's noise by ``SCALE`` (0: none), to
check that the audit catches a broken mechanism. The fit is then NOT PRIVATE (it has no (ε, δ)
to spend, so it needs ``--no-ledger``); the audit never saves or returns the model, and says so
loudly.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from privrank.atomic import atomic_file
from privrank.cli._console import make_console, status
from privrank.cli._options import FitThreads, ModelConfig, ModelParams, NoiseSeed
from privrank.cli.app import app
from privrank.errors import ConfigError

__all__ = ["EXIT_PASSED", "EXIT_VIOLATED", "audit_command"]

EXIT_PASSED = 0
EXIT_VIOLATED = 1


@app.command("audit")
def audit_command(
    model: Annotated[str, typer.Option(help="Registry name of a model with a private fit.")],
    data: Annotated[
        str, typer.Option(help="A dataset: catalog or workspace name, or a saved directory.")
    ],
    epsilon: Annotated[float, typer.Option(help="Claimed user-level ε of the private fit.")],
    max_per_user: Annotated[
        int, typer.Option(help="Contribution bound c: interactions kept per user.")
    ],
    canaries: Annotated[
        int, typer.Option(help="Canary users m (each included with probability 1/2).")
    ] = 200,
    canary_items: Annotated[
        int | None,
        typer.Option(help="Items per canary k ≤ c (default min(c, 8)); each canary's own."),
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="δ of the fit (default 1/(10·(users + canaries))).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the canaries' coins and the fit.")] = 0,
    noise_seed: NoiseSeed = None,
    param: ModelParams = None,
    config: ModelConfig = None,
    threads: FitThreads = 1,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result as JSON here.")
    ] = None,
    break_noise_for_testing: Annotated[
        float | None,
        typer.Option(
            "--break-noise-for-testing",
            help="TESTING ONLY: multiply the DP noise by this scale (0 = no noise), to check that "
            "the audit catches a broken mechanism. The audited fit is NOT PRIVATE (it is never "
            "saved).",
        ),
    ] = None,
    no_ledger: Annotated[
        bool,
        typer.Option(
            "--no-ledger",
            help="Do not spend the audited fit's (ε, δ) from the privacy budget ledger (the "
            "result says so). Without it the fit spends from the dataset's budget.",
        ),
    ] = False,
) -> None:
    """Audit a model's private fit with canary users (exit 0 passed, 1 violated, 2 bad input).

    The lower bound on ε holds with 95 % confidence, so a correct mechanism is flagged in at most
    5 % of audits. A pass is not a proof: one run with m canaries certifies at most about
    ln(m / 4.4) (about 5 for 1,000 canaries), and the result shows that ceiling.

    The fit spends its (ε, δ) from the dataset's budget in the ledger, unless --no-ledger.
    """
    from privrank.cli.train import parse_params
    from privrank.privacy.mechanisms import _noise_scale_for_testing
    from privrank.workflow.audit import audit_model
    from privrank.workflow.protocols import load_dataset

    params = parse_params(param, config)
    console = make_console(soft_wrap=True)
    err = make_console(stderr=True, soft_wrap=True)
    noise_factor = break_noise_for_testing
    broken = noise_factor is not None
    if noise_factor is not None and not (noise_factor >= 0 and noise_factor < 1):
        raise ConfigError(
            f"--break-noise-for-testing must be in [0, 1). Got {break_noise_for_testing!r}"
        )
    if broken and not no_ledger:
        raise ConfigError(
            "--break-noise-for-testing: a deliberately broken fit has no (ε, δ) guarantee to "
            "spend from the ledger; add --no-ledger"
        )
    if json_out is not None and json_out.is_dir():
        raise ConfigError(f"--json {json_out}: is a directory; give a file name")
    if broken:
        err.print(
            f"WARNING: NOT PRIVATE: the DP noise is scaled by {break_noise_for_testing:g} for "
            "testing; this audits a deliberately broken mechanism",
            style="bold red",
        )
    with status(f"loading {data}"):
        dataset = load_dataset(data)
    scale = nullcontext() if noise_factor is None else _noise_scale_for_testing(noise_factor)
    with scale, status(f"auditing {model} with {canaries} canaries"):
        result = audit_model(
            model,
            dataset,
            epsilon,
            max_per_user,
            params=params,
            delta=delta,
            canaries=canaries,
            canary_items=canary_items,
            seed=seed,
            noise_seed=noise_seed,
            threads=threads,
            no_ledger=no_ledger,
        )
    record = {"data": data, "params": params, **result.to_dict(), "no_ledger": no_ledger}
    if json_out is not None:
        with atomic_file(json_out, encoding="utf-8") as handle:
            handle.write(json.dumps(record, indent=2) + "\n")
    style = "green" if result.passed else "bold red"
    console.print(result.describe(), style=style)
    if not result.passed:
        raise typer.Exit(EXIT_VIOLATED)
