"""Two-stage recommend under load: ``POST /v1/recommend/reranked`` at a fixed open-loop rate.

A real ``privrank serve`` subprocess (``bench_serving.Server``: its own process group, a
temporary ``PRIVRANK_HOME``, a ``service`` key made with ``privrank keys create``) serves a
``two-stage`` model trained by ``privrank train`` (``--model-dir``); the open-loop generator of
the serving bench (``bench/serving/loadgen.py``, its own process, latency from each request's
scheduled time) offers ``--rate`` requests/s for ``--duration`` s over the model's users, each
asking for the re-ranked top 10 of ``N`` candidates (the model's ``candidates``). Prints p50,
p99, throughput, errors and the ranker fallbacks counted on ``/metrics``.

Usage::

    .venv/bin/privrank train --data ml100k-holdout --model two-stage --out /tmp/ts300
    .venv/bin/python bench/bench_two_stage_serving.py --model-dir /tmp/ts300 --rate 300 \\
        --duration 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
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
    server = Server(info, ["--model", str(args.model_dir)], args.workers, work / "server.log")
    server.start()
    runs = []
    try:
        path = "/v1/recommend/reranked"
        for repeat in range(args.repeats):
            out = work / f"load{repeat}.json"
            result = _load(server, key, users, args.rate, args.duration, out, path, LOADGEN)
            runs.append(result)
            print(
                f"run {repeat}: offered {args.rate:.0f}/s, "
                f"achieved {result['throughput_rps']:.1f}/s,"
                f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms,"
                f" statuses {result['statuses']}, errors {result.get('errors')}",
                flush=True,
            )
        metrics = httpx.get(
            f"{server.url}/metrics", headers={"Authorization": f"Bearer {admin}"}
        ).text
    finally:
        server.stop()
    fallbacks = re.findall(r"privrank_two_stage_ranker_fallbacks_total\{[^}]*\} (\S+)", metrics)
    stages = re.findall(r'privrank_two_stage_stage_seconds_sum\{stage="(\w+)"\} (\S+)', metrics)
    counts = dict(
        re.findall(r'privrank_two_stage_stage_seconds_count\{stage="(\w+)"\} (\S+)', metrics)
    )
    p99 = statistics.median(r["p99_ms"] for r in runs)
    print(f"median p99 over {len(runs)} runs: {p99:.1f} ms (target <= 30 ms)")
    print("ranker fallbacks (one worker's /metrics):", fallbacks or "0")
    print(
        "mean stage ms (one worker):",
        {s: round(1000 * float(v) / max(float(counts.get(s, 1)), 1), 2) for s, v in stages},
    )
    print(json.dumps({"runs": runs}))


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
