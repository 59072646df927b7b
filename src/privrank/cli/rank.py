"""``privrank ltr``: learning to rank on LightGBM/LETOR files (query groups).

``privrank ltr train --train rank.train --test rank.test --ranker lambdamart --out runs/ltr``
reads both files strictly (:func:`privrank.data.readers.ltr.read_ltr`: a bad line names the file,
line, field and value and exits with code 2), fits the ranker (a validation part for early
stopping is carved from the *training* queries with ``--validation``), prints NDCG@1/3/5/10 on
the test file and saves the ranker (checksummed safetensors + JSON).

``--epsilon E`` trains the ``listwise`` ranker with DP-SGD (one query group = one unit of
privacy; :mod:`privrank.workflow.ltr_training`) and spends (ε, δ) once from the ledger under
``--budget-key`` before the fit; LambdaMART refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from privrank.cli._console import make_console
from privrank.cli.app import app
from privrank.cli.train import parse_params

ltr_app = typer.Typer(help="Learning to rank on query-group files (LightGBM / LETOR format).")
app.add_typer(ltr_app, name="ltr", no_args_is_help=True)


@ltr_app.command("train")
def ltr_train(
    train: Annotated[Path, typer.Option(help="Training file (svmlight; groups in FILE.query)")],
    out: Annotated[Path, typer.Option(help="Where to save the ranker")],
    test: Annotated[Path | None, typer.Option(help="Test file to report NDCG@k on")] = None,
    ranker: Annotated[str, typer.Option(help="lambdamart or listwise")] = "lambdamart",
    param: Annotated[list[str] | None, typer.Option(help="Ranker setting KEY=VALUE")] = None,
    validation: Annotated[
        float, typer.Option(help="Share of training queries held out for early stopping")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the fit and of the validation draw")] = 0,
    threads: Annotated[int, typer.Option(help="Threads (0: the library's default)")] = 0,
    epsilon: Annotated[
        float | None,
        typer.Option(help="Train with DP-SGD at this ε (one query group = one unit of privacy)"),
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="δ of a private fit (default 1 / (10 · groups))")
    ] = None,
    clip: Annotated[float, typer.Option(help="Per-group gradient clipping norm (DP-SGD)")] = 1.0,
    budget_key: Annotated[
        str | None,
        typer.Option(help="Ledger key a private fit spends from (default: the train file's name)"),
    ] = None,
    ledger: Annotated[str | None, typer.Option(help="Ledger database URL")] = None,
    noise_seed: Annotated[
        int | None, typer.Option(help="Seed of the DP noise (default: fresh, secure)")
    ] = None,
) -> None:
    """Fit a ranker on query groups, report NDCG@k on a test file and save it."""
    from privrank.data.readers.ltr import read_ltr
    from privrank.errors import ConfigError
    from privrank.privacy.spec import PrivacySpec
    from privrank.ranking.ltr import LTRFitOptions, create_ranker, group_ndcg
    from privrank.workflow.ltr_training import fit_ranker

    if not 0 <= validation < 1:
        raise ConfigError(f"--validation must be in [0, 1). Got {validation!r}.")
    if epsilon is None and (delta is not None or budget_key is not None or noise_seed is not None):
        raise ConfigError("--delta, --budget-key and --noise-seed need --epsilon")
    spec = (
        None
        if epsilon is None
        else PrivacySpec(epsilon=epsilon, delta=delta, clipping_norm=clip, noise_seed=noise_seed)
    )
    groups = read_ltr(train)
    test_groups = None if test is None else read_ltr(test)
    model = create_ranker(ranker, parse_params(param or []))
    fit_part, valid_part = groups, None
    if validation > 0:
        order = np.random.default_rng(seed).permutation(groups.n_queries)
        cut = round(validation * groups.n_queries)
        valid_part, fit_part = groups.take(np.sort(order[:cut])), groups.take(np.sort(order[cut:]))
    fitted = fit_ranker(
        model,
        fit_part,
        valid_part,
        LTRFitOptions(seed=seed, threads=threads, privacy=spec),
        budget_key=budget_key or train.name,
        description=f"privrank ltr train --ranker {ranker} on {train}",
        ledger_url=ledger,
    )
    model.save(out)
    result: dict = {"ranker": ranker, "out": str(out), "train_queries": groups.n_queries}
    if fitted.spend is not None:
        result["privacy"] = {
            **fitted.spend.to_dict(),
            "guarantee": model.privacy_guarantee_.to_dict(),  # type: ignore[attr-defined]
        }
    if test_groups is not None:
        if test_groups.n_features != groups.n_features:
            widest = max(test_groups.n_features, groups.n_features)
            test_features = np.zeros((test_groups.n_rows, widest), dtype=test_groups.features.dtype)
            test_features[:, : test_groups.n_features] = test_groups.features
            test_features = test_features[:, : groups.n_features]
        else:
            test_features = test_groups.features
        scores = model.score(test_features)
        result["test"] = {
            f"ndcg@{k}": group_ndcg(scores, test_groups.labels, test_groups.group_sizes, k)
            for k in (1, 3, 5, 10)
        }
    make_console().print(json.dumps(result, indent=2), soft_wrap=True)
