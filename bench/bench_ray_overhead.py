"""Overhead of iALS on Ray actors at one node against the single-process fit.

In one run, per data set, iALS (the config's defaults unless ``--factors``/``--epochs``) is
fitted alternately in this process (``FitOptions(threads=W)``, W numba threads) and on a local
Ray with W long-lived actors (``RayEngine(workers=W)``, one CPU and one thread each), ``--runs``
times each, same seed. Per fit: the median epoch time over epochs 2..T (epoch 1 of the
single-process fit includes loading the compiled kernels; the Ray fit's epoch 1 also includes
the actors' first half-steps), and for Ray the start-up apart: the actors' creation, the blocks
put in the object store and every actor's first answer (``RayALSBlocks.__init__``). The
**overhead ratio** is the median over runs of the Ray fit's median epoch over the median over
runs of the single-process fit's (target ≤ 1.3). The factors of the two fits are compared
(equal bit for bit is expected) and NDCG@10 / Recall@20 on the test part printed. Ray's own
start-up (``ray.init``) is printed apart.

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_ray_overhead.py \
        --datasets ml-100k,synthetic-1m --workers 2 --runs 3 \\
        --json bench/results/ray_ials_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _data(name: str) -> tuple[Any, Any]:
    from privrank.data.splits import HoldoutSplit, split

    if name == "ml-100k":
        from privrank.data.catalog import load

        data = load("ml-100k").interactions
    elif name.startswith("synthetic-"):
        from privrank.testing import synthetic_interactions

        size = {"synthetic-1m": (50_000, 5_000, 20), "synthetic-200k": (10_000, 2_000, 20)}[name]
        data = synthetic_interactions(size[0], size[1], per_user=size[2], seed=1)
    else:
        raise SystemExit(f"unknown data set {name!r}")
    parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
    return parts.train, parts.test


def _fit(config: dict[str, Any], train: Any, seed: int, threads: int, engine: Any) -> dict:
    from privrank.models import IALS, FitOptions

    ends: list[float] = []
    started = time.perf_counter()
    model = IALS(**config).fit(
        train,
        FitOptions(
            seed=seed, threads=threads, engine=engine, progress=lambda r: ends.append(r.elapsed_s)
        ),
    )
    wall = time.perf_counter() - started
    epochs = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    return {"model": model, "epochs": epochs, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="ml-100k,synthetic-1m")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import ray

    from privrank.distributed import RayEngine
    from privrank.distributed.ray_als import RayALSBlocks
    from privrank.metrics import evaluate

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    ray.init(
        num_cpus=args.workers,
        object_store_memory=512 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    ray_start = time.perf_counter() - started
    print(f"ray.init: {ray_start:.2f} s", flush=True)

    startups: list[float] = []

    class TimedEngine(RayEngine):
        def als_blocks(self, problem: Any) -> RayALSBlocks:
            begun = time.perf_counter()
            blocks = super().als_blocks(problem)
            startups.append(time.perf_counter() - begun)
            return blocks

    config = {"factors": args.factors, "epochs": args.epochs}
    results: dict[str, Any] = {}
    for name in args.datasets.split(","):
        train, test = _data(name)
        print(f"{name}: {train.n_users:,} users, {train.n_items:,} items, {len(train):,} rows")
        local_epochs: list[float] = []
        ray_epochs: list[float] = []
        startups.clear()
        same = True
        metrics: dict[str, dict[str, float]] = {}
        for run in range(args.runs):
            local = _fit(config, train, args.seed, args.workers, None)
            on_ray = _fit(config, train, args.seed, 1, TimedEngine(workers=args.workers))
            local_epochs.append(statistics.median(local["epochs"][1:]))
            ray_epochs.append(statistics.median(on_ray["epochs"][1:]))
            same &= bool(
                np.array_equal(local["model"].user_factors_, on_ray["model"].user_factors_)
                and np.array_equal(local["model"].item_factors_, on_ray["model"].item_factors_)
            )
            print(
                f"  run {run + 1}: epoch median local {local_epochs[-1]:.3f} s, ray "
                f"{ray_epochs[-1]:.3f} s; ray start-up {startups[-1]:.2f} s; walls "
                f"{local['wall']:.2f} / {on_ray['wall']:.2f} s",
                flush=True,
            )
            if run == 0:
                for label, fit in (("local", local), ("ray", on_ray)):
                    result = evaluate(lambda users, m=fit["model"]: m.score(users), train, test)
                    metrics[label] = {
                        "ndcg@10": result.means["ndcg@10"],
                        "recall@20": result.means["recall@20"],
                    }
        ratio = statistics.median(ray_epochs) / statistics.median(local_epochs)
        results[name] = {
            "users": train.n_users,
            "items": train.n_items,
            "rows": len(train),
            "local_epoch_s": local_epochs,
            "ray_epoch_s": ray_epochs,
            "ray_startup_s": list(startups),
            "epoch_ratio": ratio,
            "factors_equal": same,
            "metrics": metrics,
        }
        print(
            f"  {name}: median epoch local {statistics.median(local_epochs):.3f} s, ray "
            f"{statistics.median(ray_epochs):.3f} s -> ratio {ratio:.2f} (target <= 1.3); "
            f"start-up median {statistics.median(startups):.2f} s; factors equal: {same}; "
            f"{metrics}",
            flush=True,
        )
    ray.shutdown()
    if args.json is not None:
        payload = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "workers": args.workers,
            "config": config,
            "runs": args.runs,
            "ray_init_s": ray_start,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
