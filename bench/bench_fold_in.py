"""Fold-in cost of every model on a protocol: time per test user, and its ratio to the fit time.

For each model (default: every registered model that can fold in), fit on the protocol's
``train`` part (with its validation part for early stopping, as ``privrank evaluate`` does) or
load a saved one (``--load name=DIR``), then score the test-time histories of the test users
(``--users``: a random subset, seed 0; default all) as ad-hoc history queries, in batches of
``--batch-size`` users, through :func:`privrank.metrics.evaluate` with the protocol's metrics.
That is the work of the evaluation runner's *fold-in* mode (``beauty-loo``: history = train +
validation). On a protocol whose test-time history is ``train`` (``ml100k-holdout``) the runner
scores users by code and never folds in; this script still folds their histories in, to time it.

Per model it prints and writes (``--out``, JSON): the fit's wall seconds, the wall and CPU
seconds spent in ``model.score`` (CPU: this process, all threads), milliseconds per test user,
the ratio fold-in / fit, the protocol's headline metrics over the users scored, the peak RSS so
far and the load average before and after (on a shared machine, figures are comparable within
one run only). ``--threads`` sets torch's and BLAS's threads for the fit and the fold-in.

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_fold_in.py \\
        --protocol beauty-loo --threads 1 --epochs 5
    ... --models bpr --load bpr=/tmp/bpr-beauty        # a model saved after a fit on train
    ... --models bpr --set bpr.fold_in_negatives=256   # another fold-in setting
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import threadpoolctl
import torch

from privrank.models import FitOptions, Query, Recommender, create_model, model_class, model_names
from privrank.workflow.protocols import PreparedProtocol, prepare

TRAINING_LENGTH = ("epochs", "iterations")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="beauty-loo")
    parser.add_argument("--models", nargs="+", default=None, help="default: every model")
    parser.add_argument("--users", type=int, default=None, help="test users (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs/iterations of each fit")
    parser.add_argument(
        "--set", action="append", default=[], metavar="MODEL.KEY=VALUE", help="a config value"
    )
    parser.add_argument("--load", action="append", default=[], metavar="MODEL=DIR")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def model_params(name: str, args: argparse.Namespace) -> dict[str, Any]:
    fields = model_class(name).Config.model_fields
    params: dict[str, Any] = {}
    if args.epochs is not None:
        params.update({key: args.epochs for key in TRAINING_LENGTH if key in fields})
    for item in args.set:
        key, value = item.split("=", 1)
        model, field = key.split(".", 1)
        if model == name:
            params[field] = json.loads(value)
    return params


def test_subset(prepared: PreparedProtocol, users: int | None) -> tuple[Any, np.ndarray]:
    """The test part restricted to ``users`` random test users (all when ``None``)."""
    test = prepared.test
    codes = np.flatnonzero(test.user_counts() > 0)
    if users is not None and users < len(codes):
        codes = np.sort(np.random.default_rng(0).choice(codes, size=users, replace=False))
        test = test.take(np.isin(test.users(), codes))
    return test, codes


def fold_in(
    model: Recommender, prepared: PreparedProtocol, args: argparse.Namespace
) -> dict[str, Any]:
    from privrank.metrics.evaluate import evaluate

    test, codes = test_subset(prepared, args.users)
    indptr, items = prepared.history.sequences()
    histories = Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64))
    spent = {"wall": 0.0, "cpu": 0.0}

    def score(users: np.ndarray) -> np.ndarray:
        query = histories.take(users)
        wall, cpu = time.perf_counter(), time.process_time()
        scores = model.score(query)
        spent["wall"] += time.perf_counter() - wall
        spent["cpu"] += time.process_time() - cpu
        return scores

    config = prepared.spec.evaluation_config(batch_size=args.batch_size, beyond_accuracy=False)
    result = evaluate(score, prepared.history, test, config)
    return {
        "users": len(codes),
        "fold_in_s": spent["wall"],
        "fold_in_cpu_s": spent["cpu"],
        "ms_per_user": 1000 * spent["wall"] / len(codes),
        "cpu_ms_per_user": 1000 * spent["cpu"] / len(codes),
        **{name: float(result.means[name]) for name in prepared.spec.headline},
    }


def run_model(name: str, prepared: PreparedProtocol, args: argparse.Namespace) -> dict[str, Any]:
    loads = dict(item.split("=", 1) for item in args.load)
    row: dict[str, Any] = {"model": name}
    started = time.perf_counter()
    if name in loads:
        model = Recommender.load(loads[name])
        overrides = model_params(name, args)
        if overrides:
            model.config = model.config.model_copy(update=overrides)
        row.update(loaded=loads[name], fit_s=None)
    else:
        model = create_model(name, model_params(name, args))
        options = FitOptions(seed=args.seed, threads=args.threads, validation=prepared.validation)
        model.fit(prepared.train, options)
        row["fit_s"] = time.perf_counter() - started
    row["config"] = model.config.model_dump(mode="json")
    if not model.supports_fold_in:
        row["skipped"] = "cannot fold in histories"
        return row
    row.update(fold_in(model, prepared, args))
    if row["fit_s"]:
        row["fold_in_over_fit"] = row["fold_in_s"] / row["fit_s"]
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models or model_names()
    prepared = prepare(args.protocol)
    load_before = os.getloadavg()
    rows = []
    with threadpoolctl.threadpool_limits(args.threads):
        for name in names:
            row = run_model(name, prepared, args)
            rows.append(row)
            if "skipped" in row:
                print(f"{name:13s} skipped: {row['skipped']}", flush=True)
                continue
            fit = "loaded" if row["fit_s"] is None else f"fit {row['fit_s']:7.1f} s"
            ratio = row.get("fold_in_over_fit")
            metrics = " ".join(f"{k} {row[k]:.4f}" for k in prepared.spec.headline)
            print(
                f"{name:13s} {fit}  fold-in {row['users']} users {row['fold_in_s']:7.1f} s "
                f"(CPU {row['fold_in_cpu_s']:.1f} s): {row['ms_per_user']:.2f} ms/user"
                + ("" if ratio is None else f", {ratio:.2f} x fit")
                + f"  {metrics}",
                flush=True,
            )
    summary = {
        "command": "bench/bench_fold_in.py " + " ".join(argv),
        "protocol": args.protocol,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "models": rows,
    }
    print(f"load average before {load_before}, after {summary['load_average_after']}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
