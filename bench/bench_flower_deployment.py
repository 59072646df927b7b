"""Deployment overhead: time per round on Flower's deployment runtime against the simulator's.

One run: for each ``--nodes`` N, the ML-100K holdout's training part (943 devices) is split into
N node files; ``privrank federated serve --local-devices`` (Flower environment, ``.venv-flower``)
starts the SuperLink and N SuperNodes as real processes on loopback and runs ``--rounds``
rounds of fedmf (``--clients-per-round`` expected devices, Poisson, seed 0, ``--factors``);
its per-round wall time comes from the run's ``metrics.jsonl`` (the ServerApp's own clock:
messages out, device computation, answers in, server step). The simulator
(:func:`privrank.federated.simulate`, this process) runs the same rounds on the same data, seed
and settings; its per-round time comes from its ``metrics.jsonl`` too. Printed: median round
seconds of each (the first round, which includes the ClientApps' start, reported apart), and the
ratio deployment / simulator, with the peak RSS of the whole process tree (SuperLink,
SuperNodes and their ClientApp processes) during each deployment run.

Usage::

    .venv/bin/python bench/bench_flower_deployment.py --nodes 10 50 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _round_seconds(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["seconds"] for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients-per-round", type=int, default=100)
    parser.add_argument("--factors", type=int, default=16)
    parser.add_argument("--port", type=int, default=19591)
    parser.add_argument("--flower-venv", type=Path, default=ROOT / ".venv-flower")
    args = parser.parse_args()

    from privrank.federated import FederatedSettings, simulate
    from privrank.federated.flower.devices import partition
    from privrank.models import FedMFConfig
    from privrank.testing import PeakTreeMemory
    from privrank.workflow.protocols import prepare

    train = prepare("ml100k-holdout").train
    settings = FederatedSettings(
        rounds=args.rounds, clients_per_round=args.clients_per_round, seed=0
    )
    config = FedMFConfig(factors=args.factors)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        simulate(config, train, settings, run_dir=work / "sim")
        sim = _round_seconds(work / "sim")
        results["simulator"] = {
            "median_round_s": statistics.median(sim),
            "rounds_s": sim,
            "total_s": time.perf_counter() - started,
        }
        print(f"simulator: median round {statistics.median(sim):.4f} s", flush=True)
        for nodes in args.nodes:
            devices = work / f"devices-{nodes}"
            partition(train, nodes, devices)
            out = work / f"flower-{nodes}"
            env = dict(
                os.environ, PATH=f"{args.flower_venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
            )
            command = [
                str(args.flower_venv / "bin" / "privrank"), "federated", "serve",
                "--data", "ml100k-holdout", "--out", str(out),
                "--param", f"factors={args.factors}", "--rounds", str(args.rounds),
                "--clients-per-round", str(args.clients_per_round), "--seed", "0",
                "--local-devices", str(devices), "--port", str(args.port),
                "--enrol-timeout", "1200", "--round-timeout", "600",
            ]  # fmt: skip
            tick = time.perf_counter()
            with PeakTreeMemory(interval=0.5) as peak:
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - tick
            if done.returncode != 0:
                print(f"{nodes} SuperNodes: failed ({done.returncode}): {done.stderr[-2000:]}")
                results[f"flower_{nodes}"] = {"failed": done.stderr[-2000:]}
                continue
            rounds = _round_seconds(Path(f"{out}.run"))
            later = rounds[1:] or rounds
            median = statistics.median(later)
            results[f"flower_{nodes}"] = {
                "first_round_s": rounds[0],
                "median_round_s": median,
                "rounds_s": rounds,
                "ratio_to_simulator": median / statistics.median(sim),
                "wall_s": wall,
                "peak_tree_rss_gb": peak.gigabytes,
            }
            print(
                f"{nodes} SuperNodes: first round {rounds[0]:.3f} s, median of rounds 2.. "
                f"{median:.3f} s, {median / statistics.median(sim):.1f}x the simulator's "
                f"({wall:.0f} s with start-up); peak RSS of the SuperLink, SuperNodes and "
                f"ClientApps with this process {peak.gigabytes:.2f} GB",
                flush=True,
            )
    results["peak_rss_mb_driver"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["command"] = " ".join(["bench/bench_flower_deployment.py", *sys.argv[1:]])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
