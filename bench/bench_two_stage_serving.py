"""Two-stage recommend under load: ``POST /v1/recommend/reranked`` at a fixed open-loop rate.

A real ``privrank serve`` subprocess (``bench_serving.Server``: its own process group, a
temporary ``PRIVRANK_HOME``, a ``service`` key made with ``privrank keys create``) serves a
``two-stage`` model trained by ``privrank train`` (``--model-dir``); the open-loop generator of
the serving bench (``bench/serving/loadgen.py``, its own process, latency from each request's
scheduled time) offers ``--rate`` requests/s for ``--duration`` s over the model's users, each
asking for the re-ranked top 10 of ``N`` candidates (the model's ``candidates``). Prints p50,
p99, throughput, errors, the server's CPU time per request (all its processes, user + system:
what a request costs, whatever else the machine runs) and the ranker fallbacks counted on
``/metrics``.

**Before/after** (``--baseline-source``, a checkout of another commit, e.g. ``git archive
c1d8219 src | tar -x -C /tmp/old``): its server answers the same two-stage requests, alternating.

**Peer in the same run** (``--peer-model-dir``): a second server with a single retrieval model
(e.g. EASE trained on the same data) answers ``POST /v1/recommend`` (retrieval only, no ranking
stage) at the same rate, its runs alternating with the two-stage runs, so both see the same
machine load; the ratio of the median p99s is printed.

Usage::

    .venv/bin/privrank train --data ml100k-holdout --model two-stage --out /tmp/ts300
    .venv/bin/privrank train --data ml100k-holdout --model ease --out /tmp/ease
    .venv/bin/python bench/bench_two_stage_serving.py --model-dir /tmp/ts300 \\
        --peer-model-dir /tmp/ease --baseline-source /tmp/old --rate 300 --duration 15 \\
        --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import LOADGEN, Server, create_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--peer-model-dir", type=Path, default=None)
    parser.add_argument(
        "--baseline-source",
        type=Path,
        default=None,
        help="a checkout of another commit (its src/ is imported): its two-stage server runs "
        "too, alternating, for a before/after in the same run",
    )
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import privrank.ranking  # noqa: F401  (registers two-stage)
    from privrank.models import Recommender

    model_dir = args.model_dir / "model" if (args.model_dir / "model").is_dir() else args.model_dir
    model = Recommender.load(model_dir)
    users = [str(u) for u in model.user_ids_.to_pylist()]
    work = Path(tempfile.mkdtemp(prefix="privrank-two-stage-serving-"))
    home = work / "home"
    home.mkdir()
    key = create_key(home, "service")
    admin = create_key(home, "admin")
    info = {"home": str(home)}
    servers = {
        "two-stage": (
            Server(info, ["--model", str(args.model_dir)], args.workers, work / "server.log"),
            "/v1/recommend/reranked",
        )
    }
    if args.baseline_source is not None:
        servers["two-stage-baseline"] = (
            Server(
                info,
                ["--model", str(args.model_dir)],
                args.workers,
                work / "baseline.log",
                source=args.baseline_source,
            ),
            "/v1/recommend/reranked",
        )
    if args.peer_model_dir is not None:
        servers["retrieval-only"] = (
            Server(info, ["--model", str(args.peer_model_dir)], args.workers, work / "peer.log"),
            "/v1/recommend",
        )
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for server, _ in servers.values():
        server.start()
    try:
        for repeat in range(args.repeats):
            for name, (server, path) in servers.items():
                out = work / f"{name}{repeat}.json"
                before = _cpu_seconds(server)
                result = _load(server, key, users, args.rate, args.duration, out, path, LOADGEN)
                result["server_cpu_ms_per_request"] = (
                    1000 * (_cpu_seconds(server) - before) / max(result["completed"], 1)
                )
                result["loadavg"] = os.getloadavg()[0]
                runs[name].append(result)
                print(
                    f"run {repeat} {name:18s} ({path}): offered {args.rate:.0f}/s, "
                    f"achieved {result['throughput_rps']:.1f}/s,"
                    f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms,"
                    f" server CPU {result['server_cpu_ms_per_request']:.2f} ms/request,"
                    f" statuses {result['statuses']}, errors {result.get('errors')},"
                    f" load {result['loadavg']:.1f}",
                    flush=True,
                )
        two_stage = servers["two-stage"][0]
        metrics = httpx.get(
            f"{two_stage.url}/metrics", headers={"Authorization": f"Bearer {admin}"}
        ).text
    finally:
        for server, _ in servers.values():
            server.stop()
    fallbacks = re.findall(r"privrank_two_stage_ranker_fallbacks_total\{[^}]*\} (\S+)", metrics)
    stages = re.findall(r'privrank_two_stage_stage_seconds_sum\{stage="(\w+)"\} (\S+)', metrics)
    counts = dict(
        re.findall(r'privrank_two_stage_stage_seconds_count\{stage="(\w+)"\} (\S+)', metrics)
    )
    p99 = {name: statistics.median(r["p99_ms"] for r in got) for name, got in runs.items()}
    cpu = {
        name: statistics.median(r["server_cpu_ms_per_request"] for r in got)
        for name, got in runs.items()
    }
    for name in runs:
        print(
            f"{name}: median p99 over {len(runs[name])} runs {p99[name]:.1f} ms,"
            f" median server CPU {cpu[name]:.2f} ms/request"
        )
    print(f"two-stage target: p99 <= 30 ms at {args.rate:.0f}/s")
    if "retrieval-only" in p99:
        print(
            f"ratio two-stage / retrieval-only: p99 x{p99['two-stage'] / p99['retrieval-only']:.2f}"
            f", CPU x{cpu['two-stage'] / cpu['retrieval-only']:.2f}"
        )
    print("ranker fallbacks (one worker's /metrics):", fallbacks or "0")
    print(
        "mean stage ms (one worker):",
        {s: round(1000 * float(v) / max(float(counts.get(s, 1)), 1), 2) for s, v in stages},
    )
    print(json.dumps({"runs": runs}))


def _cpu_seconds(server) -> float:
    """User + system CPU seconds of the server's process and all its children so far."""
    import psutil

    assert server.process is not None
    root = psutil.Process(server.process.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _load(server, key, users, rate, duration, out, path, loadgen):
    import subprocess

    process = subprocess.Popen(
        [
            sys.executable,
            loadgen,
            "--port",
            str(server.port),
            "--key",
            key,
            "--path",
            path,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--users",
            ",".join(users),
            "--out",
            str(out),
        ]
    )
    if process.wait(timeout=duration * 4 + 60) != 0:
        raise RuntimeError(f"loadgen failed at {rate}/s")
    return json.loads(out.read_text())


if __name__ == "__main__":
    main()
