"""Benchmark of full-ranking evaluation: a 64-factor model on MovieLens-20M-sized data.

Generates a synthetic data set (:func:`privrank.data.synthetic.generate`, the default shape is
MovieLens-20M's: 138,493 users, 26,744 items, 20,000,263 interactions), splits it 80/20 per
row at random, draws random user/item factors (random factors are fine for timing; the
quality numbers they give are those of a random model), and runs
:func:`privrank.metrics.evaluate` over **every** test user with the full catalogue ranked and
training items excluded. The scorer is the model's matrix multiply
``user_factors[users] @ item_factors.T`` (float32, numpy/BLAS), so the evaluator's own
timing splits the run, in the same run, into

- ``scoring``: the matrix multiply (inside the scorer),
- ``ranking``: masking training items and the exact top-k,
- ``metrics``: matching the lists with the test items and computing every metric,

and the target is ``ranking + metrics <= scoring``. Peak memory is the process RSS, sampled
every 20 ms during the evaluation, next to the RSS before it (data and factors loaded).

Usage::

    .venv/bin/python bench/bench_eval.py                        # full size
    .venv/bin/python bench/bench_eval.py --users 5000 --items 2000 --interactions 200000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from datetime import UTC, datetime

import numpy as np
import psutil
import torch

from privrank.data.interactions import Interactions
from privrank.metrics import EvaluationConfig, bootstrap_cis, evaluate


class _PeakRss:
    """Samples the process RSS in a background thread; ``peak`` is the largest seen."""

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


def _data(args: argparse.Namespace) -> tuple[Interactions, Interactions, str]:
    try:
        from privrank.data.synthetic import SyntheticConfig, generate
    except ImportError:  # generator not available: uniform random pairs
        rng = np.random.default_rng(args.seed)
        data = Interactions.from_codes(
            rng.integers(0, args.users, args.interactions),
            rng.integers(0, args.items, args.interactions),
            n_users=args.users,
            n_items=args.items,
        )
        source = "numpy uniform pairs"
    else:
        config = SyntheticConfig(
            n_users=args.users,
            n_items=args.items,
            n_interactions=args.interactions,
            timestamps=False,
            rating_levels=None,
            seed=args.seed,
        )
        data = generate(config)
        source = "privrank.data.synthetic.generate (Zipf popularity, clusters, unique pairs)"
    in_test = np.random.default_rng(args.seed + 1).random(len(data)) < args.test_fraction
    return data.take(~in_test), data.take(in_test), source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_493)
    parser.add_argument("--items", type=int, default=26_744)
    parser.add_argument("--interactions", type=int, default=20_000_263)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--cutoffs", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--no-beyond", action="store_true", help="skip beyond-accuracy metrics")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    started = time.perf_counter()
    train, test, source = _data(args)
    prepared = time.perf_counter() - started
    rng = np.random.default_rng(args.seed + 2)
    user_factors = rng.standard_normal((args.users, args.factors), dtype=np.float32)
    item_factors = rng.standard_normal((args.items, args.factors), dtype=np.float32)

    def score(users: np.ndarray) -> np.ndarray:
        return user_factors[users] @ item_factors.T

    config = EvaluationConfig(
        cutoffs=tuple(args.cutoffs),
        batch_size=args.batch_size,
        beyond_accuracy=not args.no_beyond,
    )
    before = psutil.Process().memory_info().rss
    with _PeakRss() as rss:
        tick = time.perf_counter()
        result = evaluate(score, train, test, config)
        wall = time.perf_counter() - tick
    cis_s = None
    if args.bootstrap:
        tick = time.perf_counter()
        bootstrap_cis(result.per_user, n_resamples=args.bootstrap, seed=0)
        cis_s = time.perf_counter() - tick
    timing = result.timing
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
        },
        "data": {
            "source": source,
            "users": args.users,
            "items": args.items,
            "interactions": args.interactions,
            "train": len(train),
            "test": len(test),
            "prepare_s": round(prepared, 2),
        },
        "factors": args.factors,
        "config": config.model_dump(mode="json"),
        "counts": result.counts,
        "wall_s": round(wall, 2),
        "scoring_s": round(timing.scoring, 2),
        "ranking_s": round(timing.ranking, 2),
        "metrics_s": round(timing.metrics, 2),
        "evaluation_s": round(timing.evaluation, 2),
        "evaluation_over_scoring": round(timing.evaluation / timing.scoring, 3),
        "target_met": timing.evaluation <= timing.scoring,
        "rss_before_gb": round(before / 2**30, 2),
        "rss_peak_gb": round(rss.peak / 2**30, 2),
        "bootstrap_s": None if cis_s is None else round(cis_s, 2),
        "means": {k: round(v, 5) for k, v in result.means.items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
