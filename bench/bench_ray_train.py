"""Overhead of the Ray paths at one node, against the single-process path in the same run.

Two paths of issue 15 are measured here, each against its single-process peer on the same data
in the same process (ratios, not absolute times, are what a shared machine can compare):

- ``gram``: an EASE fit (and a private DP-EASE fit) with the Gram matrix summed over user
  partitions on the Ray engine (``FitOptions(engine=RayEngine(...))``) vs in-process;
- ``scoring``: full-ranking evaluation with top-k written to Parquet over Ray tasks
  (:func:`privrank.distributed.ray_batch.evaluate_on_ray`) vs the single-process evaluator
  (:func:`privrank.metrics.evaluate.evaluate`), at growing user counts; the metrics are
  checked equal in the run.

Ray is started once before timing (its start-up is printed apart). Synthetic data: users draw
``per_user`` distinct items from a Zipf-like popularity. Each figure is the median of
``--repeats`` runs (the scoring paths alternate run by run; ``--skip-gram`` times the
scoring only). Besides the single-process evaluator (the peer of the ratio), the scoring arm
times the same evaluator followed by the Parquet write the Ray tasks do (the Ray path's whole
job in one process), and the Ray path with ``2 · workers`` partitions whatever the user count
(the default before ``ray_batch.scoring_partitions``). A PNG of the scoring curve is written
with ``--png``.

    .venv/bin/python bench/bench_ray_train.py --users 10000,100000,1000000 --items 1000 \
        --workers 2 --repeats 3 --png bench/results/ray_train.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from privrank.data.interactions import Interactions
from privrank.metrics.evaluate import EvaluationConfig, evaluate
from privrank.models import EASE, FitOptions
from privrank.privacy.spec import PrivacySpec
from privrank.testing import PeakTreeMemory


def synthetic(n_users: int, n_items: int, per_user: int, seed: int) -> Interactions:
    """Users with ``per_user`` distinct items each, items drawn with weight ``1/(rank+10)``."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(n_items) + 10.0)
    weights /= weights.sum()
    draws = rng.choice(n_items, size=(n_users, per_user * 2), p=weights)
    users, items = [], []
    for start in range(0, n_users, 100_000):
        block = np.sort(draws[start : start + 100_000], axis=1)
        keep = np.ones_like(block, dtype=bool)
        keep[:, 1:] = block[:, 1:] != block[:, :-1]
        rows = np.nonzero(keep)
        users.append(rows[0] + start)
        items.append(block[keep])
    return Interactions.from_codes(
        np.concatenate(users), np.concatenate(items), n_users=n_users, n_items=n_items
    )


def holdout(data: Interactions, seed: int) -> tuple[Interactions, Interactions]:
    """A random 20 % of rows as test (per row; the evaluator skips users without test rows)."""
    test = np.random.default_rng(seed).random(len(data)) < 0.2
    return data.take(~test), data.take(test)


def interleaved_times(
    functions, repeats: int, peaks: list[int] | None = None
) -> tuple[list[list[float]], list[object]]:
    """Each function timed ``repeats`` times, the functions alternating within each round (so a
    change of the machine's load touches every path alike); the times and the last results.
    With ``peaks`` (one per function), each is raised to the largest RSS of this process tree
    seen while that function ran (the data every arm shares, held by the caller, included)."""
    times: list[list[float]] = [[] for _ in functions]
    results: list[object] = [None for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            with PeakTreeMemory() as peak:
                started = time.perf_counter()
                results[index] = function()
                times[index].append(time.perf_counter() - started)
            if peaks is not None:
                peaks[index] = max(peaks[index], peak.bytes)
    return times, results


def median_time(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def local_with_parquet(model, train, test, config, path: Path):
    """The single-process evaluator, then the same top-k Parquet file the Ray tasks write
    (:func:`privrank.distributed.ray_batch.write_top_k`): the Ray path's whole job in one
    process."""
    from privrank.distributed.ray_batch import write_top_k

    result = evaluate(
        model.score, train, test, config.model_copy(update={"keep_recommendations": True})
    )
    write_top_k(model, result.users, result.recommendations, path)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="10000,100000")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--gram-users", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-gram", action="store_true", help="Time the scoring only.")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--core-only",
        action="store_true",
        help="Time only the single-process evaluator and the default Ray path (for 10M+ users, "
        "where the two comparison arms would double the run).",
    )
    args = parser.parse_args()

    import ray

    from privrank.distributed import RayEngine, RayEngineConfig
    from privrank.distributed.ray_batch import evaluate_on_ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    ray.init(
        num_cpus=args.workers,
        object_store_memory=1024 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    print(f"ray start-up: {time.perf_counter() - started:.1f} s (not in the figures below)")
    engine = RayEngine(workers=args.workers)
    # Ray starts its worker processes on first use (each imports privrank and torch): one
    # untimed warm-up of each path, timed apart.
    warm = synthetic(2000, 50, 5, seed=0)
    started = time.perf_counter()
    EASE().fit(warm, FitOptions(engine=engine))
    evaluate_on_ray(EASE().fit(warm), warm, warm, engine=RayEngineConfig(workers=args.workers))
    print(f"ray worker warm-up: {time.perf_counter() - started:.1f} s (not in the figures)")
    threads = args.workers  # the in-process peer gets the same cores
    report: dict[str, object] = {
        "workers": args.workers,
        "repeats": args.repeats,
        "load_start": os.getloadavg()[0],
    }
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f}")

    data = synthetic(args.gram_users, args.items, args.per_user, seed=1)
    spec = PrivacySpec(epsilon=8.0, max_interactions_per_user=50)
    gram = {}
    for label, privacy in () if args.skip_gram else (("ease", None), ("dp-ease", spec)):
        local, _ = median_time(
            lambda p=privacy: EASE().fit(data, FitOptions(threads=threads, privacy=p)),
            args.repeats,
        )
        on_ray, _ = median_time(
            lambda p=privacy: EASE().fit(
                data, FitOptions(threads=threads, privacy=p, engine=engine)
            ),
            args.repeats,
        )
        gram[label] = {"local_s": local, "ray_s": on_ray, "ratio": on_ray / local}
        print(
            f"gram fit {label:8s} {args.gram_users:>9,} users x {args.items} items: "
            f"local {local:6.2f} s, ray {on_ray:6.2f} s, ratio {on_ray / local:.2f}"
        )
    report["gram"] = gram

    scoring = []
    config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg", "recall"), beyond_accuracy=False)
    for n_users in [int(u) for u in args.users.split(",")]:
        train, test = holdout(synthetic(n_users, args.items, args.per_user, seed=2), seed=3)
        model = EASE().fit(train, FitOptions(threads=threads))
        held = PeakTreeMemory().sample()  # the data and the model, before any arm runs
        fixed = RayEngineConfig(workers=args.workers, partitions=2 * args.workers)
        with tempfile.TemporaryDirectory() as tmp:
            arms = [
                lambda m=model, a=train, b=test: evaluate(m.score, a, b, config),
                lambda m=model, a=train, b=test, o=Path(tmp) / "topk": evaluate_on_ray(
                    m, a, b, config, engine=RayEngineConfig(workers=args.workers), out=o
                ),
            ]
            if not args.core_only:
                arms += [
                    lambda m=model, a=train, b=test, o=Path(tmp) / "local.parquet": (
                        local_with_parquet(m, a, b, config, o)
                    ),
                    lambda m=model, a=train, b=test, o=Path(tmp) / "topk2", e=fixed: (
                        evaluate_on_ray(m, a, b, config, engine=e, out=o)
                    ),
                ]
            arm_peaks = [0] * len(arms)
            times, results = interleaved_times(arms, args.repeats, arm_peaks)
            top_k_files = len(list((Path(tmp) / "topk").glob("part-*.parquet")))
        local_times, ray_times = times[0], times[1]
        oracle, result = results[0], results[1]
        parquet_times, fixed_times = (times[2], times[3]) if len(times) > 2 else ([], [])
        local, on_ray = statistics.median(local_times), statistics.median(ray_times)
        parquet = statistics.median(parquet_times) if parquet_times else float("nan")
        fixed_s = statistics.median(fixed_times) if fixed_times else float("nan")
        equal = result.result.means == oracle.means
        row = {
            "users": n_users,
            "local_s": local,
            "ray_s": on_ray,
            "ratio": on_ray / local,
            "local_times_s": local_times,
            "ray_times_s": ray_times,
            "local_parquet_s": parquet,
            "local_parquet_times_s": parquet_times,
            "ratio_to_local_parquet": on_ray / parquet,
            "ray_2w_partitions_s": fixed_s,
            "ray_2w_partitions_times_s": fixed_times,
            "partitions": result.partitions,
            "top_k_files": top_k_files,
            "tree_rss_gb_before_arms": held / 1e9,
            "peak_tree_rss_gb_local": arm_peaks[0] / 1e9,
            "peak_tree_rss_gb_ray": arm_peaks[1] / 1e9,
            "metrics_equal": equal,
            "ndcg@10": oracle.means["ndcg@10"],
            "load": os.getloadavg()[0],
        }
        scoring.append(row)
        print(
            f"scoring {n_users:>10,} users: local {local:7.3f} s (no Parquet), ray {on_ray:7.3f} s "
            f"(with Parquet, {result.partitions} partitions), ratio {on_ray / local:.2f}, "
            f"metrics equal: {equal}; load {os.getloadavg()[0]:.1f}; "
            f"RSS of the process tree before the arms {held / 1e9:.2f} GB, peak: "
            f"local {arm_peaks[0] / 1e9:.2f} GB, "
            f"ray {arm_peaks[1] / 1e9:.2f} GB\n"
            f"    single process + the same Parquet {parquet:7.3f} s "
            f"(ratio {on_ray / parquet:.2f}); "
            f"ray with {2 * args.workers} partitions (the earlier default) {fixed_s:7.3f} s "
            f"(ratio {fixed_s / local:.2f})",
            flush=True,
        )
    report["scoring"] = scoring
    ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 4))
        users = [r["users"] for r in scoring]
        axis.loglog(users, [r["local_s"] for r in scoring], "o-", label="single process")
        axis.loglog(
            users, [r["ray_s"] for r in scoring], "s-", label=f"Ray, {args.workers} workers"
        )
        axis.set_xlabel("users scored")
        axis.set_ylabel("seconds")
        axis.set_title("Full-ranking evaluation + top-10, 1 node")
        axis.legend()
        figure.tight_layout()
        figure.savefig(args.png, dpi=120)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
