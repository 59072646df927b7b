"""Overhead of Ray Train (TorchTrainer, gloo, CPU) for SASRec and Mult-VAE at one node.

In one run, on ML-100K (the design's holdout protocol: per-user random 80/20, seed 0), each
model is fitted four ways with the same config and seed: in this process
(``FitOptions(threads=1)``), on Ray Train with 1 worker (1 CPU, 1 thread), with 1 worker and
fault tolerance on (``max_failures=1``: every epoch's per-rank checkpoint reported to Ray
Train's storage; ``ray1_checkpoints``) and with 2 workers (1 CPU each). Per fit it reports the
median epoch time (rank 0's epochs for Ray Train, from the fit's progress reports), and for Ray
Train the start-up apart: the driver's wall time of the run minus the summed epochs (worker
processes, imports, process group, the model's return).
The **overhead ratio** is median epoch (Ray Train, 1 worker) / median epoch (single process),
target ≤ 1.3. NDCG@10 and Recall@20 on the test part are printed for each fit (the 2-worker fit
differs from the single-process one by its dropout draws and float order: within noise is the
check). Ray is started before timing (its start-up is printed apart too).

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_ray_train_overhead.py \
        --epochs 5 --json bench/results/ray_train_overhead.json
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

CONFIGS: dict[str, dict[str, Any]] = {
    "sasrec": {},  # the model's defaults
    "mult-vae": {},
}


def _ndcg(model: Any, train: Any, test: Any) -> dict[str, float]:
    from privrank.metrics import evaluate

    result = evaluate(lambda users: model.score(users), train, test)
    return {"ndcg@10": result.means["ndcg@10"], "recall@20": result.means["recall@20"]}


def _local(name: str, config: dict[str, Any], train: Any, seed: int) -> tuple[Any, list[float]]:
    from privrank.models import FitOptions, create_model

    ends: list[float] = []
    options = FitOptions(seed=seed, threads=1, progress=lambda r: ends.append(r.elapsed_s))
    model = create_model(name, config).fit(train, options)
    return model, [b - a for a, b in zip([0.0, *ends], ends, strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", default="sasrec,mult-vae")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import ray

    from privrank.data.catalog import load
    from privrank.data.splits import HoldoutSplit, split
    from privrank.distributed.ray_train import RayTrainConfig, run_ray_train
    from privrank.models import FitOptions, create_model

    parts = split(load("ml-100k").interactions, HoldoutSplit(fraction=0.2, seed=0))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    for attempt in range(3):  # a loaded machine can miss the raylet's 30 s start-up window
        try:
            ray.init(
                num_cpus=2,
                object_store_memory=256 * 1024 * 1024,
                include_dashboard=False,
                log_to_driver=False,
            )
            break
        except Exception as exc:
            print(f"ray.init attempt {attempt + 1} failed: {exc}", flush=True)
            ray.shutdown()
    ray_start = time.perf_counter() - started
    print(f"ray.init: {ray_start:.1f} s; load {os.getloadavg()[0]:.2f}", flush=True)
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": "2-core 24 GB, shared with parallel work",
        "epochs": args.epochs,
        "ray_init_s": ray_start,
        "load_before": os.getloadavg()[0],
    }
    for name in args.models.split(","):
        config = CONFIGS[name] | {"epochs": args.epochs, "patience": 0}
        local, local_epochs = _local(name, config, parts.train, args.seed)
        row: dict[str, Any] = {
            "config": config,
            "local": {"epoch_s": local_epochs, **_ndcg(local, parts.train, parts.test)},
        }
        paths = {"ray1": (1, 0), "ray1_checkpoints": (1, 1), "ray2": (2, 0)}
        for key, (workers, failures) in paths.items():
            run = run_ray_train(
                create_model(name, config),
                parts.train,
                FitOptions(seed=args.seed, threads=1),
                RayTrainConfig(workers=workers, max_failures=failures),
            )
            row[key] = {
                "epoch_s": list(run.epoch_seconds),
                "wall_s": run.wall_seconds,
                "startup_s": run.wall_seconds - sum(run.epoch_seconds),
                **_ndcg(run.model, parts.train, parts.test),
            }
        base = statistics.median(local_epochs)
        for key in paths:
            row[key]["ratio"] = statistics.median(row[key]["epoch_s"]) / base
        out[name] = row
        print(
            f"{name}: median epoch local {base:.2f} s; Ray Train 1 worker "
            f"{statistics.median(row['ray1']['epoch_s']):.2f} s (ratio {row['ray1']['ratio']:.3f}, "
            f"target <= 1.3; start-up {row['ray1']['startup_s']:.1f} s); 2 workers "
            f"{statistics.median(row['ray2']['epoch_s']):.2f} s (ratio {row['ray2']['ratio']:.3f}; "
            f"start-up {row['ray2']['startup_s']:.1f} s); 1 worker with per-epoch checkpoints "
            f"{statistics.median(row['ray1_checkpoints']['epoch_s']):.2f} s (ratio "
            f"{row['ray1_checkpoints']['ratio']:.3f})",
            flush=True,
        )
        print(
            f"{name}: NDCG@10 local {row['local']['ndcg@10']:.4f}, 1 worker "
            f"{row['ray1']['ndcg@10']:.4f}, 2 workers {row['ray2']['ndcg@10']:.4f}; Recall@20 "
            f"{row['local']['recall@20']:.4f} / {row['ray1']['recall@20']:.4f} / "
            f"{row['ray2']['recall@20']:.4f}",
            flush=True,
        )
    out["load_after"] = os.getloadavg()[0]
    ray.shutdown()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
