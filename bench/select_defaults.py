"""Choose model defaults on validation parts carved from training data, across data sets.

For each data set, the model is fitted on a *selection train* part and scored on a
*selection validation* part, both carved from the data a protocol trains on; no test part is
ever read:

- ``ml100k``: the ``ml100k-holdout`` protocol's train part, split again by a per-user random
  80/20 holdout (seed 1); the history at validation time is the selection train part.
- ``beauty``, ``video``: the ``beauty-loo`` / ``video-loo`` protocol's train part (fit) and its
  validation part (each user's second-to-last item; history = train). The test item is
  never loaded into the evaluation.
- ``synth-*``: data from :func:`privrank.data.synthetic.generate` at several sizes and
  densities (below), split by a per-user random 80/20 holdout (seed 1).

With ``--curve EVERY`` an iterative model (Mult-VAE, SASRec, BPR with early stopping) is also
given the validation part as its fit's validation split, with ``validate_every=EVERY`` and
``patience=0``: it trains all its epochs and records NDCG@10 / HR@10 of the validation part
every ``EVERY`` epochs (its own evaluator: all items ranked, the history masked), so one fit
gives the validation curve over epochs. The row then holds ``curve``: ``[[epoch, NDCG@10,
HR@10], ...]``; its ``ndcg@10`` is the scored model's, i.e. the best epoch's weights (a model's
``refit`` option is turned off: it would train on the scored part).

Each grid point is one fit; the script prints one JSON line per fit (data set, model, the
config given, the resolved config when the model reports one, NDCG@10 and HR@10 of the
validation part, fit seconds) and appends it to ``--out``. ``--threads`` bounds the fit's
threads (torch, BLAS, numba).

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/select_defaults.py \\
        --model ials --datasets ml100k,beauty,video,synth-small,synth-sparse \\
        --grid '{"unobserved_weight": [0.5, 1, 2]}' --threads 1 --out /tmp/ials.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

from privrank.data.interactions import Interactions
from privrank.data.splits import HoldoutSplit, split
from privrank.data.synthetic import SyntheticConfig, generate
from privrank.metrics.evaluate import EvaluationConfig, evaluate
from privrank.models import FitOptions, create_model, model_class
from privrank.workflow.protocols import prepare

SYNTHETIC: dict[str, dict[str, int]] = {
    # dense and small: 2,000 users, 500 items, density 5%
    "synth-dense": {"n_users": 2_000, "n_items": 500, "n_interactions": 50_000},
    # mid: 10,000 users, 2,000 items, density 0.5%
    "synth-small": {"n_users": 10_000, "n_items": 2_000, "n_interactions": 100_000},
    # sparse and larger: 30,000 users, 15,000 items, density 0.044% (Beauty-like)
    "synth-sparse": {"n_users": 30_000, "n_items": 15_000, "n_interactions": 200_000},
}
EVALUATION = EvaluationConfig(cutoffs=(10,), metrics=("ndcg", "hit_rate"))


@cache
def selection_parts(name: str) -> tuple[Interactions, Interactions]:
    """``(fit part, validation part)`` of a data set, both carved from training data."""
    if name == "ml100k":
        carved = split(prepare("ml100k-holdout").train, HoldoutSplit(fraction=0.2, seed=1))
        return carved.train, carved.test
    if name in ("beauty", "video"):
        prepared = prepare(f"{name}-loo")
        if prepared.validation is None:  # pragma: no cover - both protocols have one
            raise SystemExit(f"{name}-loo has no validation part")
        return prepared.train, prepared.validation
    if name in SYNTHETIC:
        data = generate(SyntheticConfig(**SYNTHETIC[name], seed=0)).compact()
        carved = split(data, HoldoutSplit(fraction=0.2, seed=1))
        return carved.train, carved.test
    raise SystemExit(f"unknown data set {name!r}; known: ml100k, beauty, video, {list(SYNTHETIC)}")


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    values = itertools.product(*(grid[key] for key in keys))
    return [dict(zip(keys, point, strict=True)) for point in values]


def run_one(
    model_name: str, dataset: str, config: dict[str, Any], threads: int, curve: int = 0
) -> dict[str, Any]:
    train, validation = selection_parts(dataset)
    if curve:
        config = config | {"validate_every": curve, "patience": 0}
        if "refit" in model_class(model_name).Config.model_fields:
            config |= {"refit": False}  # a refit would train on the scored validation part
    model = create_model(model_name, config)
    started = time.perf_counter()
    # Early-stopping models see no validation part here: the validation part is what is scored.
    # A model that carves its own is told the validation part's shape (as the runner tells it
    # the protocol's): the next item on beauty / video, random items elsewhere.
    shape = "next" if dataset in ("beauty", "video") else "random"
    model.fit(
        train,
        FitOptions(
            seed=0, threads=threads, test_shape=shape, validation=validation if curve else None
        ),
    )
    fit_s = time.perf_counter() - started
    result = evaluate(model.score, train, validation, EVALUATION)
    # Settings the fit derived from the data (scalars learned attributes, e.g. iALS's α₀).
    resolved = {
        key: value
        for key, value in vars(model).items()
        if key.endswith("_") and isinstance(value, float)
    }
    row: dict[str, Any] = {
        "dataset": dataset,
        "model": model_name,
        "config": config,
        "resolved": resolved or None,
        "ndcg@10": round(float(result.means["ndcg@10"]), 5),
        "hit_rate@10": round(float(result.means["hit_rate@10"]), 5),
        "fit_s": round(fit_s, 1),
        "users": int(train.n_users),
        "items": int(train.n_items),
        "train_rows": len(train),
    }
    if curve:
        history = model.validation_history_
        row["curve"] = [[int(e), round(float(n), 5), round(float(h), 5)] for e, n, h in history]
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--datasets", default="ml100k,beauty,video,synth-small,synth-sparse")
    parser.add_argument("--grid", default="{}", help="JSON: parameter -> list of values")
    parser.add_argument("--base", default="{}", help="JSON: fixed parameters")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--curve",
        type=int,
        default=0,
        help="validate every this many epochs on the validation part (0: no curve)",
    )
    args = parser.parse_args(argv)
    base = json.loads(args.base)
    for dataset in args.datasets.split(","):
        for point in grid_points(json.loads(args.grid)):
            row = run_one(args.model, dataset, base | point, args.threads, args.curve)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out is not None:
                with args.out.open("a") as out:
                    out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
