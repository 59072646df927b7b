"""Node-count curve of the training-side Ray paths on a local multi-node cluster (issue 15).

For each N of ``--nodes`` a fresh process starts a ``ray.cluster_utils.Cluster`` with a CPU-less
head and N one-CPU worker nodes and times, with ``workers = N``:

- ``gram``: an EASE fit whose Gram matrix is summed over user partitions on Ray;
- ``ials``: an iALS fit whose half-steps run over N long-lived Ray actors;
- ``scoring``: full-ranking evaluation with top-10 lists written to Parquet over Ray tasks.

The reference is the single-process path (``N = 0`` in the output: no Ray, ``--threads``
threads) in its own process, on the same synthetic data. Every run checks its results against
the reference (max absolute difference of the EASE weights and iALS item factors; equality of
the metric means). Peak memory is the RSS of the whole process tree (driver, Ray's head and
node processes and workers), sampled every 0.1 s (``bench_ray_data.run_with_tree_peak``).
Ray's start-up and one small warm-up of each path are timed apart and left out.

All "nodes" share this machine's cores, so on a 2-core machine the curve cannot fall past
2 nodes: it shows that the paths run unchanged on 1, 2, 3 nodes, and what each node costs.

    PRIVRANK_DATA_DIR=/work/shared/data PYTHONPATH=src .venv/bin/python bench/bench_ray_nodes.py \
        --nodes 1 2 3 --png bench/results/ray_nodes.png --json bench/results/ray_nodes.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_ray_data import run_with_tree_peak
from bench_ray_train import holdout, synthetic
from privrank.metrics.evaluate import EvaluationConfig, evaluate
from privrank.models import EASE, FitOptions, create_model

STORE = 256 * 2**20  # object store per node


def _start_cluster(nodes: int):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE}
    )
    for _ in range(nodes):
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    return cluster


def child(nodes: int, args: argparse.Namespace, work: Path) -> dict:
    """Time the three paths on ``nodes`` one-CPU nodes (0: in-process, no Ray)."""
    from privrank.distributed import RayEngine, RayEngineConfig
    from privrank.distributed.ray_batch import evaluate_on_ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg", "recall"), beyond_accuracy=False)
    ials = {"factors": args.factors, "epochs": args.epochs}
    times: dict[str, float] = {}
    engine = cluster = None
    threads = args.threads
    if nodes:
        started = time.perf_counter()
        cluster = _start_cluster(nodes)
        times["ray_start_s"] = time.perf_counter() - started
        engine, threads = RayEngine(workers=nodes), 1
        warm = synthetic(2000, 50, 5, seed=0)
        started = time.perf_counter()
        EASE().fit(warm, FitOptions(engine=engine))
        create_model("ials", {"factors": 4, "epochs": 1}).fit(warm, FitOptions(engine=engine))
        evaluate_on_ray(EASE().fit(warm), warm, warm, engine=RayEngineConfig(workers=nodes))
        times["warm_up_s"] = time.perf_counter() - started

    options = FitOptions(threads=threads, engine=engine, seed=0)
    gram_data = synthetic(args.gram_users, args.items, args.per_user, seed=1)
    started = time.perf_counter()
    ease = EASE().fit(gram_data, options)
    times["gram_s"] = time.perf_counter() - started
    np.save(work / "ease.npy", ease.weights_)

    als_data = synthetic(args.als_users, args.items, args.per_user, seed=4)
    started = time.perf_counter()
    fitted = create_model("ials", ials).fit(als_data, options)
    times["ials_s"] = time.perf_counter() - started
    np.save(work / "ials.npy", fitted.item_factors_)

    train, test = holdout(synthetic(args.score_users, args.items, args.per_user, seed=2), seed=3)
    model = EASE().fit(train, FitOptions(threads=1))  # the same weights in every process
    started = time.perf_counter()
    if nodes:
        with tempfile.TemporaryDirectory() as tmp:
            means = evaluate_on_ray(
                model, train, test, config, engine=RayEngineConfig(workers=nodes), out=tmp
            ).result.means
    else:
        means = evaluate(model.score, train, test, config).means
    times["scoring_s"] = time.perf_counter() - started
    if cluster is not None:
        import ray

        ray.shutdown()
        cluster.shutdown()
    return {"nodes": nodes, **times, "means": dict(means)}


def run(nodes: int, args: argparse.Namespace, work: Path) -> dict:
    folder = work / f"nodes-{nodes}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child", str(nodes), "--work", str(folder)]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in _sizes(args).items()]
    output, peak = run_with_tree_peak(command)
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_tree_rss_gb"] = peak / 2**30
    result["load"] = os.getloadavg()[0]
    return result


def _sizes(args: argparse.Namespace) -> dict[str, object]:
    keys = ("gram_users", "als_users", "score_users", "items", "per_user", "factors", "epochs")
    return {k: getattr(args, k) for k in (*keys, "threads")}


def compare(reference: Path, other: Path) -> dict[str, float]:
    """Max |difference| of the EASE weights and iALS item factors against the reference."""
    return {
        name: float(np.max(np.abs(np.load(reference / name) - np.load(other / name))))
        for name in ("ease.npy", "ials.npy")
    }


def plot(curve: list[dict], reference: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    counts = [row["nodes"] for row in curve]
    for key, label in (
        ("gram_s", "EASE Gram fit"),
        ("ials_s", "iALS fit"),
        ("scoring_s", "scoring"),
    ):
        line = left.plot(counts, [row[key] for row in curve], "o-", label=f"{label} on Ray")
        left.axhline(reference[key], color=line[0].get_color(), linestyle=":", linewidth=1)
    left.set_xlabel("one-CPU nodes (local cluster)")
    left.set_ylabel("seconds (dotted: single process)")
    left.set_xticks(counts)
    left.legend()
    right.plot(counts, [row["peak_tree_rss_gb"] for row in curve], "s-", label="Ray")
    right.axhline(reference["peak_tree_rss_gb"], linestyle=":", label="single process")
    right.set_xlabel("one-CPU nodes (local cluster)")
    right.set_ylabel("peak RSS of the process tree (GB)")
    right.set_xticks(counts)
    right.legend()
    figure.suptitle("Training-side Ray paths against node count (all nodes share 2 cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--gram-users", type=int, default=200_000)
    parser.add_argument("--als-users", type=int, default=100_000)
    parser.add_argument("--score-users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="The single-process peer's.")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args, args.work)), flush=True)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-ray-nodes-"))
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f}", flush=True)
    reference = run(0, args, work)
    print(f"single process ({args.threads} threads): {reference}", flush=True)
    curve = []
    for nodes in args.nodes:
        row = run(nodes, args, work)
        row["max_abs_diff"] = compare(work / "nodes-0", work / f"nodes-{nodes}")
        row["metrics_equal"] = row["means"] == reference["means"]
        curve.append(row)
        print(
            f"{nodes} node(s): gram {row['gram_s']:.2f} s, ials {row['ials_s']:.2f} s, "
            f"scoring {row['scoring_s']:.2f} s, peak {row['peak_tree_rss_gb']:.2f} GB, "
            f"max |diff| {row['max_abs_diff']}, metrics equal {row['metrics_equal']}, "
            f"load {row['load']:.1f}",
            flush=True,
        )
    report = {"sizes": _sizes(args), "single_process": reference, "curve": curve}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.png:
        plot(curve, reference, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
