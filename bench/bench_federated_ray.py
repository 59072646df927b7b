"""Federated simulator on Ray: simulated clients per second, in-process against Ray tasks.

On :func:`bench_federated.synthetic_split` data (``--users`` users, 1,000 items, 20 rows per user
on average) the same non-private fedmf run (``--rounds`` rounds, Poisson cohorts of ``--cohort``
devices, batches of ``--batch-size`` devices, seed 0) runs in one process and then with its
device batches as Ray tasks on a local Ray instance, with ``--workers`` tasks in flight (each
count in the list; the instance is started once with the largest). Each arm runs ``--repeats``
times; the figure is the median of the simulated devices per second (cohort devices summed over
the rounds, divided by the rounds' wall time, as :func:`privrank.federated.simulate` times it).
Every Ray model is checked to equal the in-process one bit for bit. Ray's workers are separate
processes: the peak memory printed is this (driver) process's.

Usage::

    .venv/bin/python bench/bench_federated_ray.py --users 100000 --cohort 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_federated import _peak_mib, synthetic_split
from privrank.federated import FederatedSettings, simulate
from privrank.models import FedMFConfig


def _run(config, train, settings, runner=None):
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate(config, train, settings, run_dir=Path(tmp) / "run", runner=runner)
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    clients = sum(json.loads(line)["clients"] for line in lines)
    return clients / result.seconds, result.model.item_factors_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--cohort", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray

    from privrank.distributed.ray_federated import RayClientRunner

    train, _ = synthetic_split(args.users, 10)
    config = FedMFConfig(factors=args.factors)
    settings = FederatedSettings(
        rounds=args.rounds, clients_per_round=args.cohort, batch_size=args.batch_size, seed=0
    )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    rates: dict[str, list[float]] = {"in-process": []}
    reference = None
    for repeat in range(args.repeats):
        rate, reference = _run(config, train, settings)
        rates["in-process"].append(rate)
        for workers in args.workers:
            rate, model = _run(config, train, settings, RayClientRunner(workers=workers))
            np.testing.assert_array_equal(model, reference)  # bit for bit
            rates.setdefault(f"ray, {workers} worker(s)", []).append(rate)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()))
    ray.shutdown()
    base = statistics.median(rates["in-process"])
    print(
        f"\n{time.strftime('%Y-%m-%d')} {platform.node()} {os.cpu_count()} CPUs; users "
        f"{args.users:,}, cohort {args.cohort}, rounds {args.rounds}, batch {args.batch_size}, "
        f"factors {args.factors}, repeats {args.repeats}"
    )
    print("| arm | devices/s (median) | ratio to in-process |\n|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / base:.2f} |")
    print(f"driver peak RSS {_peak_mib():,.0f} MiB; every Ray model equal to in-process: yes")


if __name__ == "__main__":
    main()
