"""Benchmark of the synthetic generator: wall time and peak memory at scale.

Each measurement runs in a fresh Python subprocess (so peak RSS is that run's alone), and the
median of ``--repeats`` runs is reported. Two jobs are measured:

- ``generate``: :func:`privrank.data.synthetic.generate` into an in-memory ``Interactions``;
  peak RSS is compared with the size of the resulting Arrow columns. The statistics of the
  result (:func:`privrank.data.stats.dataset_stats`) are timed after the peak is read.
- ``csv``: :func:`privrank.data.synthetic.write_ratings_csv` from the configuration, streaming
  (never holding the whole data set), to a MovieLens-20M style ``ratings.csv``.

Usage::

    .venv/bin/python bench/bench_synth.py --interactions 20000263 --repeats 3

The defaults mimic MovieLens-20M's shape (138,493 users, 26,744 items, 20,000,263 ratings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(job: str, config_json: str, workdir: str) -> dict:
    """Run one job in this (fresh) process and return its measurements."""
    import psutil

    from privrank.data.stats import dataset_stats
    from privrank.data.synthetic import SyntheticConfig, generate, write_ratings_csv

    config = SyntheticConfig.model_validate_json(config_json)
    baseline = psutil.Process().memory_info().rss
    result: dict = {"job": job, "baseline_rss": baseline}
    cpu = _cpu_seconds()
    if job == "generate":
        start = time.perf_counter()
        data = generate(config)
        result["wall_s"] = time.perf_counter() - start
        result["cpu_s"] = _cpu_seconds() - cpu
        result["peak_rss"] = _peak_rss_bytes()
        result["rows"] = len(data)
        result["arrow_bytes"] = data.table.nbytes
        start = time.perf_counter()
        stats = dataset_stats(data)
        result["stats_s"] = time.perf_counter() - start
        result["stats"] = stats.to_dict()
    elif job == "csv":
        path = Path(workdir) / "ratings.csv"
        start = time.perf_counter()
        rows = write_ratings_csv(config, path)
        result["wall_s"] = time.perf_counter() - start
        result["cpu_s"] = _cpu_seconds() - cpu
        result["peak_rss"] = _peak_rss_bytes()
        result["rows"] = rows
        result["csv_bytes"] = path.stat().st_size
        path.unlink()
    else:
        raise SystemExit(f"unknown job {job!r}")
    return result


def _run_child(job: str, config_json: str, workdir: str) -> dict:
    command = [sys.executable, __file__, "--child", job, "--config-json", config_json]
    command += ["--workdir", workdir]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_493)
    parser.add_argument("--items", type=int, default=26_744)
    parser.add_argument("--interactions", type=int, default=20_000_263)
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", default="generate,csv", help="comma-separated: generate,csv")
    parser.add_argument("--workdir", default=None, help="where the CSV is written (temporary)")
    parser.add_argument("--json", default=None, help="also write all runs to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(_child(args.child, args.config_json, args.workdir)))
        return

    from privrank.data.synthetic import SyntheticConfig

    config = SyntheticConfig(
        n_users=args.users,
        n_items=args.items,
        n_interactions=args.interactions,
        n_clusters=args.clusters,
        seed=args.seed,
    )
    config_json = config.model_dump_json()
    print(f"config: {config_json}")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    runs: dict[str, list[dict]] = {}
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for job in args.jobs.split(","):
            runs[job] = []
            for repeat in range(args.repeats):
                run = _run_child(job, config_json, workdir)
                runs[job].append(run)
                print(
                    f"{job} run {repeat + 1}: {run['wall_s']:.1f} s wall, "
                    f"{run['cpu_s']:.1f} s CPU, "
                    f"peak RSS {_mb(run['peak_rss'])}",
                    flush=True,
                )

    print()
    print(
        "| job | rows | wall time, median (runs) | CPU time, median | rows/s (wall) "
        "| peak RSS, median | RSS after imports | output size |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for job, job_runs in runs.items():
        wall = statistics.median(r["wall_s"] for r in job_runs)
        cpu = statistics.median(r["cpu_s"] for r in job_runs)
        peak = statistics.median(r["peak_rss"] for r in job_runs)
        base = statistics.median(r["baseline_rss"] for r in job_runs)
        rows = job_runs[0]["rows"]
        size = (
            f"Arrow columns {_mb(job_runs[0]['arrow_bytes'])}"
            if job == "generate"
            else f"CSV {_mb(job_runs[0]['csv_bytes'])}"
        )
        runs_text = ", ".join(f"{r['wall_s']:.1f}" for r in job_runs)
        print(
            f"| {job} | {rows:,} | {wall:.1f} s ({runs_text}) | {cpu:.1f} s | {rows / wall:,.0f} | "
            f"{_mb(peak)} | {_mb(base)} | {size} |"
        )
    if "generate" in runs:
        first = runs["generate"][0]
        stats = first["stats"]
        print()
        stats_s = statistics.median(r["stats_s"] for r in runs["generate"])
        print(
            f"dataset_stats on the result: {stats_s:.1f} s; "
            f"users {stats['users']:,}, items {stats['items']:,}, Gini {stats['gini_items']:.3f}, "
            f"rows per user {stats['user_lengths']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
