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

``--max-in-flight W [W ...]`` runs each node count once per cap (``0``: no cap, every message
of an exchange sent at once; the ServerApp's ``--max-in-flight``), and once per ``--superexec``
(``own``: each SuperNode starts its own SuperExec, flwr's default; ``shared``: ``serve
--shared-superexec``, one SuperExec process for all local SuperNodes). A sampler (every 0.5 s)
also records, per arm: the most ``flwr-clientapp`` processes alive at once (what the cap
bounds), the peak RSS and the peak PSS of the tree by process kind (PSS, every 2 s, counts a
shared page once in total, so it is the honest footprint; RSS over-states it), the lowest
``MemAvailable`` of the machine, and the highest 1-minute load average.

Usage::

    .venv/bin/python bench/bench_flower_deployment.py --nodes 10 50 --rounds 5 \
        --max-in-flight 0 8
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
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def _round_seconds(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["seconds"] for line in lines if line.strip()]


KINDS = ("flwr-clientapp", "flower-superexec", "flower-supernode", "flower-superlink")


def _kind(process: psutil.Process) -> str:
    try:
        line = " ".join(process.cmdline())
    except psutil.Error:
        return "gone"
    for kind in KINDS:
        if kind in line:
            return kind
    return "flwr-serverapp" if "flwr-serverapp" in line else "other"


def _mem_available() -> int:
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


class TreeSampler:
    """Samples the process tree of this process every ``interval`` seconds (a daemon thread)."""

    def __init__(self, interval: float = 0.5, pss_every: int = 4) -> None:
        self.interval = interval
        self.pss_every = pss_every
        self.peak_clientapps = 0
        self.peak_rss = 0
        self.peak_pss = 0
        self.pss_by_kind: dict[str, int] = {}
        self.count_by_kind: dict[str, int] = {}
        self.min_available = _mem_available()
        self.max_load = os.getloadavg()[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, with_pss: bool) -> None:
        me = psutil.Process()
        tree = [me, *me.children(recursive=True)]
        kinds = [_kind(p) for p in tree]
        self.peak_clientapps = max(self.peak_clientapps, kinds.count("flwr-clientapp"))
        rss = pss = 0
        by_kind: dict[str, int] = {}
        for process, kind in zip(tree, kinds, strict=True):
            try:
                if with_pss:
                    info = process.memory_full_info()
                    pss += info.pss
                    by_kind[kind] = by_kind.get(kind, 0) + info.pss
                    rss += info.rss
                else:
                    rss += process.memory_info().rss
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        if with_pss and pss > self.peak_pss:
            self.peak_pss = pss
            self.pss_by_kind = by_kind
            self.count_by_kind = {k: kinds.count(k) for k in by_kind}
        self.min_available = min(self.min_available, _mem_available())
        self.max_load = max(self.max_load, os.getloadavg()[0])

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self._sample(tick % self.pss_every == 0)
            tick += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, object]:
        return {
            "peak_clientapp_processes": self.peak_clientapps,
            "peak_tree_rss_gb": self.peak_rss / 1e9,
            "peak_tree_pss_gb": self.peak_pss / 1e9,
            "pss_gb_by_kind_at_peak": {k: v / 1e9 for k, v in sorted(self.pss_by_kind.items())},
            "processes_by_kind_at_peak": dict(sorted(self.count_by_kind.items())),
            "min_mem_available_gb": self.min_available / 1e9,
            "max_load_1min": self.max_load,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients-per-round", type=int, default=100)
    parser.add_argument("--factors", type=int, default=16)
    parser.add_argument("--port", type=int, default=19591)
    parser.add_argument("--flower-venv", type=Path, default=ROOT / ".venv-flower")
    parser.add_argument(
        "--max-in-flight", type=int, nargs="+", default=[8], help="caps to run (0: no cap)"
    )
    parser.add_argument(
        "--superexec",
        nargs="+",
        choices=["own", "shared"],
        default=["own"],
        help="own: each SuperNode starts its SuperExec (flwr's default); shared: one for all "
        "(serve --shared-superexec)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from privrank.federated import FederatedSettings, simulate
    from privrank.federated.flower.devices import partition
    from privrank.models import FedMFConfig
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
            for cap, superexec in [(c, e) for e in args.superexec for c in args.max_in_flight]:
                name = f"flower_{nodes}_cap_{cap or 'none'}_{superexec}"
                out = work / name
                env = dict(
                    os.environ,
                    PATH=f"{args.flower_venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
                )
                command = [
                    str(args.flower_venv / "bin" / "privrank"), "federated", "serve",
                    "--data", "ml100k-holdout", "--out", str(out),
                    "--param", f"factors={args.factors}", "--rounds", str(args.rounds),
                    "--clients-per-round", str(args.clients_per_round), "--seed", "0",
                    "--local-devices", str(devices), "--port", str(args.port),
                    "--enrol-timeout", "1200", "--round-timeout", "600",
                    "--max-in-flight", str(cap),
                    *(["--shared-superexec"] if superexec == "shared" else []),
                ]  # fmt: skip
                load_before = os.getloadavg()[0]
                available_before = _mem_available()
                tick = time.perf_counter()
                with TreeSampler() as sampler:
                    done = subprocess.run(
                        command, env=env, capture_output=True, text=True, check=False
                    )
                wall = time.perf_counter() - tick
                sampled = {
                    **sampler.summary(),
                    "load_1min_before": load_before,
                    "mem_available_gb_before": available_before / 1e9,
                    "wall_s": wall,
                }
                if done.returncode != 0:
                    print(f"{name}: failed ({done.returncode}): {done.stderr[-2000:]}")
                    results[name] = {"failed": done.stderr[-2000:], **sampled}
                    continue
                rounds = _round_seconds(Path(f"{out}.run"))
                later = rounds[1:] or rounds
                median = statistics.median(later)
                results[name] = {
                    "nodes": nodes,
                    "max_in_flight": cap or None,
                    "superexec": superexec,
                    "first_round_s": rounds[0],
                    "median_round_s": median,
                    "rounds_s": rounds,
                    "ratio_to_simulator": median / statistics.median(sim),
                    **sampled,
                }
                print(
                    f"{nodes} SuperNodes, max in flight {cap or 'no cap'}, {superexec} "
                    f"SuperExec: first round "
                    f"{rounds[0]:.3f} s, median of rounds 2.. {median:.3f} s, "
                    f"{median / statistics.median(sim):.0f}x the simulator's ({wall:.0f} s with "
                    f"start-up); at most {sampler.peak_clientapps} ClientApp processes at once; "
                    f"peak tree RSS {sampler.peak_rss / 1e9:.2f} GB, PSS "
                    f"{sampler.peak_pss / 1e9:.2f} GB; MemAvailable {available_before / 1e9:.1f}"
                    f" -> min {sampler.min_available / 1e9:.1f} GB; load {load_before:.1f} -> "
                    f"max {sampler.max_load:.1f}",
                    flush=True,
                )
    results["peak_rss_mb_driver"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["command"] = " ".join(["bench/bench_flower_deployment.py", *sys.argv[1:]])
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
