"""Robustness: every model and the implicit peers on every shared data set, at defaults.

For each protocol (default: ``ml100k-holdout``, ``beauty-loo``, ``video-loo``) and each model
(default: every registered model), the model is fitted and evaluated exactly as
``privrank evaluate`` does (:func:`privrank.workflow.runner.fit_and_evaluate`: fit on
``train`` with the validation part for early stopping, then the test users scored; on a
leave-one-out protocol each test history, train + validation item, is folded in, and a model
that cannot fold in, implicit's BPR, is refitted on train + validation). Every model runs at
its defaults; ``--max-seconds`` (when given) caps the fit of the models that have a
``max_seconds`` setting (BPR, Mult-VAE, SASRec), and the table says so.

Each finished (protocol, model) appends one JSON line to ``--out`` (so a long run can be
resumed with ``--skip-done`` and read while it runs): the headline metrics, the wall seconds of
the fit and of the evaluation (fold-in included), their ratio and how the test history was
used. The beyond-accuracy metrics (novelty, ARP, coverage, Gini) are off unless
``--beyond-accuracy`` is given (``privrank evaluate`` computes them by default). The protocol's
train/test pair sets, which depend on the split alone, are built once
per protocol before its models run (as ``privrank evaluate`` builds them once for all its
models) and reused by every evaluation; their build time is recorded as ``pairs_s``, apart
from ``evaluate_s``. ``--table`` reads those lines and prints the markdown table with the
issue's targets checked: no privrank model below most-popular on NDCG@10, iALS >= implicit's
ALS, BPR >= implicit's BPR, and, on ``beauty-loo``, evaluation time <= fit time.

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_robustness.py \\
        --threads 1 --out bench/results/robustness.jsonl --skip-done
    .venv/bin/python bench/bench_robustness.py --table bench/results/robustness.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from privrank.models import model_class, model_names
from privrank.workflow.protocols import prepare
from privrank.workflow.run_config import ModelSpec, RunConfig
from privrank.workflow.runner import fit_and_evaluate

PROTOCOLS = ("ml100k-holdout", "beauty-loo", "video-loo")
PEERS = {"ials": "implicit-als", "bpr": "implicit-bpr"}
PEER_MODELS = frozenset(PEERS.values())
BASELINE = "most-popular"
METRIC = "ndcg@10"
COST_PROTOCOL = "beauty-loo"


def done(path: Path | None) -> set[tuple[str, str]]:
    if path is None or not path.exists():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(row["protocol"], row["model"]) for row in rows}


def run_one(
    protocol: Any, name: str, args: argparse.Namespace, pairs_s: float | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.max_seconds is not None and "max_seconds" in model_class(name).Config.model_fields:
        params["max_seconds"] = args.max_seconds
    config = RunConfig(
        protocols=(protocol.spec.name,),
        models=(ModelSpec(name=name, params=params),),
        threads=args.threads,
        beyond_accuracy=args.beyond_accuracy,
        n_resamples=200,
    )
    started = time.perf_counter()
    result = fit_and_evaluate(protocol, config.models[0], config)
    model = result.model
    return {
        "protocol": protocol.spec.name,
        "model": name,
        "params": params,
        "history_mode": result.history_mode,
        "fit_s": result.fit_seconds,
        "evaluate_s": result.evaluate_seconds,
        "evaluate_over_fit": (
            result.evaluate_seconds / result.fit_seconds if result.fit_seconds else None
        ),
        "pairs_s": pairs_s,
        "beyond_accuracy": args.beyond_accuracy,
        "metrics": {k: float(v) for k, v in result.result.means.items()},
        "best_epoch": model.fit_summary().get("best_epoch"),
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def table(path: Path) -> str:
    """The markdown table of a results file, with every target miss listed under it."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by = {(row["protocol"], row["model"]): row for row in rows}
    protocols = [p for p in PROTOCOLS if any(key[0] == p for key in by)]
    models = sorted({row["model"] for row in rows}, key=lambda m: (m in PEER_MODELS, m))
    lines = [
        "| model | " + " | ".join(f"{p} NDCG@10 (fit s / eval s)" for p in protocols) + " |",
        "|---|" + "---|" * len(protocols),
    ]
    misses: list[str] = []
    for model in models:
        cells = []
        for protocol in protocols:
            row = by.get((protocol, model))
            if row is None:
                cells.append("not run")
                continue
            value = row["metrics"][METRIC]
            cell = f"{value:.4f} ({row['fit_s']:.0f} / {row['evaluate_s']:.0f})"
            if row["history_mode"] == "refit":
                cell += " refit"
            if row["params"].get("max_seconds") is not None:
                cell += f" cap {row['params']['max_seconds']:.0f}s"
            cells.append(cell)
            misses += check(by, protocol, model, row)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- MISS: {miss}" for miss in misses] or ["- every target checked here is met"]
    return "\n".join(lines)


def check(
    by: dict[tuple[str, str], dict[str, Any]], protocol: str, model: str, row: dict[str, Any]
) -> list[str]:
    """The issue's targets for one (protocol, model) result that it misses."""
    misses = []
    value = row["metrics"][METRIC]
    baseline = by.get((protocol, BASELINE))
    if model not in PEER_MODELS and baseline is not None:
        reference = baseline["metrics"][METRIC]
        if value < reference:
            misses.append(f"{model} on {protocol}: {value:.4f} < most-popular {reference:.4f}")
    peer = by.get((protocol, PEERS.get(model, "")))
    if peer is not None and value < peer["metrics"][METRIC]:
        misses.append(
            f"{model} on {protocol}: {value:.4f} < {peer['model']} {peer['metrics'][METRIC]:.4f}"
        )
    ratio = row["evaluate_over_fit"]
    if protocol == COST_PROTOCOL and model not in PEER_MODELS and ratio is not None and ratio > 1:
        misses.append(
            f"{model} on {protocol}: evaluation {row['evaluate_s']:.1f} s > fit "
            f"{row['fit_s']:.1f} s (ratio {ratio:.2f})"
        )
    return misses


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--models", default=None, help="comma-separated (default: every model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument(
        "--beyond-accuracy",
        action="store_true",
        help="also compute novelty, ARP, coverage and Gini (privrank evaluate's default)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON lines, appended")
    parser.add_argument("--skip-done", action="store_true", help="skip results already in --out")
    parser.add_argument("--table", type=Path, default=None, help="print the table of a file")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(table(args.table))
        return 0
    torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else model_names()
    finished = done(args.out) if args.skip_done else set()
    for protocol_name in args.protocols.split(","):
        prepared = prepare(protocol_name)
        started = time.perf_counter()
        prepared.evaluation_pairs()  # once per protocol, shared by its models' evaluations
        pairs_s = time.perf_counter() - started
        for name in names:
            if (protocol_name, name) in finished:
                continue
            row = run_one(prepared, name, args, pairs_s)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out is not None:
                with args.out.open("a") as out:
                    out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
