"""EASE at large catalogues: ``ease-sparse`` against dense EASE (time, peak memory, NDCG).

1. **Beauty leave-one-out** (``--jobs beauty``; 22,363 users, 12,101 items; DESIGN.md's
   protocol: last item test, second to last validation, test-time history = train +
   validation, full ranking, history masked). Dense :class:`privrank.models.EASE` and
   :class:`privrank.models.EASESparse` at several ``neighbors`` are fitted on ``train`` at the
   same regularisation; each reports its fit time, the peak memory its fit added, NDCG@10 on
   the validation part (what a choice of ``neighbors`` may look at) and NDCG@10 / HR@10 on the
   test part (the validation and test users' histories folded in).
   ``--jobs ml100k`` does the same on the ML-100K holdout (1,682 items; validation carved from
   ``train``, a per-user 20 % holdout, seed 0, and the model refitted on all of ``train`` for
   the test numbers), so that a default for ``neighbors`` is chosen on more than one data set.
2. **100k items, synthetic** (``--jobs synthetic``; :func:`privrank.data.synthetic.generate`
   with 200,000 users, 100,000 items, 3,000,000 interactions, at most 200 per user; per-user
   random 80/20 holdout, seed 0): ``ease-sparse`` alone (dense EASE would need
   ``4 · 100,000²`` bytes = 37 GiB for its inverse), with most-popular in the same run as the
   floor; fit time, peak memory, NDCG@10 and Recall@20 on the holdout, training items masked.

Every fit runs in a fresh child process (this script with ``--child``), so that the peak
memory of one fit is not hidden by another's: *fit peak* is the highest resident set size
sampled every 20 ms during the fit minus the resident set size just before it (the data, the
interpreter and the libraries are not counted). Fits run with ``--threads`` threads (torch,
numba). The load average before and after each fit is printed: on a shared machine, compare
figures within one run.

Usage::

    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_ease_sparse.py \\
        --jobs beauty,synthetic --out bench/results/ease_sparse.json
    .venv/bin/python bench/bench_ease_sparse.py --jobs synthetic --quick     # small, fast
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class _PeakRss:
    """Samples this process's resident set size every ``interval`` seconds."""

    def __init__(self, interval: float = 0.02) -> None:
        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


# ----------------------------------------------------------------------------- child side
def _fit_measured(model: Any, train: Any, threads: int) -> dict[str, Any]:
    from privrank.models import FitOptions

    before = psutil.Process().memory_info().rss
    load = _load()
    with _PeakRss() as peak:
        started = time.perf_counter()
        model.fit(train, FitOptions(seed=0, threads=threads))
        seconds = time.perf_counter() - started
    return {
        "fit_s": seconds,
        "fit_peak_mib": (peak.peak - before) / 2**20,
        "rss_before_fit_mib": before / 2**20,
        "load_before": load,
        "load_after": _load(),
    }


def _means(score: Any, history: Any, truth: Any, metrics: tuple[str, ...], cutoffs: tuple) -> dict:
    from privrank.metrics.evaluate import EvaluationConfig, evaluate

    config = EvaluationConfig(cutoffs=cutoffs, metrics=metrics, beyond_accuracy=False)
    started = time.perf_counter()
    result = evaluate(score, history, truth, config)
    means = {name: float(value) for name, value in result.means.items()}
    return means | {"evaluate_s": time.perf_counter() - started}


def _child_protocol(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from privrank.models import Query, create_model
    from privrank.tuning import carve_validation
    from privrank.workflow.protocols import prepare

    prepared = prepare(spec["protocol"])
    metrics, cutoffs = ("ndcg", "hit_rate", "recall"), (10, 20)
    model = create_model(spec["model"], spec["params"])
    if prepared.validation is None:  # ml100k-holdout: validation carved from train
        train, validation = carve_validation(prepared.train, 0.2, 0)
        probe = create_model(spec["model"], spec["params"]).fit(train)
        scores = _means(probe.score, train, validation, metrics, cutoffs)
    out = _fit_measured(model, prepared.train, spec["threads"])
    if prepared.validation is not None:
        scores = _means(model.score, prepared.train, prepared.validation, metrics, cutoffs)
    indptr, items = prepared.history.sequences()
    histories = Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64))
    test = _means(
        lambda users: model.score(histories.take(users)),
        prepared.history,
        prepared.test,
        metrics,
        cutoffs,
    )
    nnz = getattr(getattr(model, "weights_", None), "nnz", None)
    return out | {"validation": scores, "test": test, "weights_nnz": nnz}


def _child_synthetic(spec: dict[str, Any]) -> dict[str, Any]:
    from privrank.data.interactions import Interactions
    from privrank.models import create_model

    train = Interactions.load(Path(spec["data"]) / "train")
    test = Interactions.load(Path(spec["data"]) / "test")
    model = create_model(spec["model"], spec["params"])
    out = _fit_measured(model, train, spec["threads"])
    means = _means(model.score, train, test, ("ndcg", "recall"), (10, 20))
    nnz = getattr(getattr(model, "weights_", None), "nnz", None)
    return out | {"test": means, "weights_nnz": nnz}


def _child(argument: str) -> None:
    spec = json.loads(argument)
    job = {"protocol": _child_protocol, "synthetic": _child_synthetic}[spec["job"]]
    print("RESULT " + json.dumps(job(spec)), flush=True)


# ----------------------------------------------------------------------------- parent side
def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"child {spec} failed:\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def _label(model: str, params: dict[str, Any]) -> str:
    return model + "".join(f" {k}={v}" for k, v in params.items())


def bench_protocol(args: argparse.Namespace, protocol: str) -> list[dict[str, Any]]:
    configs = [("ease", {"regularization": args.regularization})]
    configs += [
        ("ease-sparse", {"regularization": args.regularization, "neighbors": k})
        for k in args.neighbors
    ]
    rows = []
    for model, params in configs:
        spec = {
            "job": "protocol",
            "protocol": protocol,
            "model": model,
            "params": params,
            "threads": args.threads,
        }
        result = _run_child(spec) | {"model": _label(model, params)}
        rows.append(result)
        print(
            f"{protocol} {result['model']}: fit {result['fit_s']:.1f} s, fit peak "
            f"{result['fit_peak_mib']:.0f} MiB, validation NDCG@10 "
            f"{result['validation']['ndcg@10']:.4f}, test NDCG@10 {result['test']['ndcg@10']:.4f}"
            f" HR@10 {result['test']['hit_rate@10']:.4f} (load {result['load_before']} -> "
            f"{result['load_after']})",
            flush=True,
        )
    return rows


def bench_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    from privrank.data.splits import HoldoutSplit, split
    from privrank.data.synthetic import SyntheticConfig, generate

    shape = {
        "n_users": args.synthetic_users,
        "n_items": args.synthetic_items,
        "n_interactions": args.synthetic_interactions,
        "max_user_interactions": args.synthetic_max_per_user,
        "seed": 0,
    }
    started = time.perf_counter()
    data = generate(SyntheticConfig(**shape))
    parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
    print(
        f"synthetic {shape}: {len(data):,} rows, {data.n_items:,} items, generated and split "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        parts.train.save(Path(tmp) / "train")
        parts.test.save(Path(tmp) / "test")
        del data, parts
        configs = [("most-popular", {})]
        configs += [
            ("ease-sparse", {"regularization": args.regularization, "neighbors": k})
            for k in args.synthetic_neighbors
        ]
        for model, params in configs:
            spec = {
                "job": "synthetic",
                "model": model,
                "params": params,
                "threads": args.threads,
                "data": tmp,
            }
            result = _run_child(spec) | {"model": _label(model, params)}
            rows.append(result)
            print(
                f"synthetic {result['model']}: fit {result['fit_s']:.1f} s, fit peak "
                f"{result['fit_peak_mib']:.0f} MiB, NDCG@10 {result['test']['ndcg@10']:.4f}, "
                f"Recall@20 {result['test']['recall@20']:.4f}, B non-zeros "
                f"{result['weights_nnz']} (load {result['load_before']} -> "
                f"{result['load_after']})",
                flush=True,
            )
    return {"shape": shape, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", default="beauty,synthetic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--regularization", type=float, default=300.0)
    parser.add_argument("--neighbors", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--synthetic-users", type=int, default=200_000)
    parser.add_argument("--synthetic-items", type=int, default=100_000)
    parser.add_argument("--synthetic-interactions", type=int, default=3_000_000)
    parser.add_argument("--synthetic-max-per-user", type=int, default=200)
    parser.add_argument(
        "--synthetic-neighbors", type=lambda s: [int(v) for v in s.split(",")], default=[200]
    )
    parser.add_argument("--quick", action="store_true", help="small synthetic data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child)
        return
    args.neighbors = args.neighbors or [50, 100, 200, 400]
    if args.quick:
        args.synthetic_users, args.synthetic_items, args.synthetic_interactions = (
            5_000,
            5_000,
            100_000,
        )
    jobs = set(args.jobs.split(","))
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores visible)",
        "command": " ".join(sys.argv),
        "threads": args.threads,
    }
    for job, protocol in (("beauty", "beauty-loo"), ("ml100k", "ml100k-holdout")):
        if job in jobs:
            report[job] = bench_protocol(args, protocol)
    if "synthetic" in jobs:
        report["synthetic"] = bench_synthetic(args)
    if args.out is not None:
        from privrank.atomic import atomic_file

        with atomic_file(args.out, encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
