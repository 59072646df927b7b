"""CPU per re-ranked request, in process: ``RerankedAnswer`` (the route's and the hot path's
answer) called once per request on a real two-stage model, without HTTP.

Each *round* runs one Python process per source tree (this checkout, then
``--baseline-source``, alternating, so both see the same machine load), which loads the model
(``--model-dir``, trained by ``privrank train --model two-stage``), times its first request
(the wall time a fresh process pays, which the server now spends at load), answers one warm-up
pass, then answers ``--requests`` known users' re-ranked top-10 one at a time on an event loop,
and reports the CPU time of the whole process (all threads: the event loop and the compute
thread) per request, plus the mean in-process stage times. The medians over ``--rounds`` and
their ratio (this / baseline) are printed; the two sources' answers (items and scores of every
request) are compared and the number of requests whose top-10 or scores differ is printed.

This is what a request costs the server's CPU, without the load generator and HTTP; the open-loop
p99 at a fixed rate is ``bench/bench_two_stage_serving.py``'s (a quiet machine is needed).

Usage::

    git archive main src | tar -x -C /tmp/old
    PYTHONPATH=src .venv/bin/python bench/bench_two_stage_request_cpu.py \\
        --model-dir /tmp/ts300 --baseline-source /tmp/old --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import asyncio, json, sys, time
from types import SimpleNamespace
import numpy as np
import orjson
from prometheus_client import CollectorRegistry
import privrank.ranking  # noqa: F401  (registers two-stage)
from privrank.models import Recommender
from privrank.serving.auth import Principal
from privrank.serving.reranked import RerankedAnswer, RerankedRequest

model_dir, n_requests, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model = Recommender.load(model_dir)
state = SimpleNamespace(
    store=SimpleNamespace(current=SimpleNamespace(model=model, version="bench")),
    metrics=SimpleNamespace(registry=CollectorRegistry()),
)
who = SimpleNamespace(may_ask_for=lambda user_id: True)
users = [u.as_py() for u in model.user_ids_[:n_requests]]
bodies = [
    RerankedRequest(user_id=u, k=10, ranker_budget_ms=10_000, total_budget_ms=10_000)
    for u in users
]
answer = RerankedAnswer()

async def run():
    got = []
    for body in bodies:
        got.append(orjson.loads((await answer(state, who, body)).body))
    return got

async def first():
    return await answer(state, who, bodies[0])

first_wall = time.perf_counter()
asyncio.run(first())  # the first request of a fresh process (what the server's warm-up pays)
first_wall = time.perf_counter() - first_wall
asyncio.run(run())  # warm-up
cpu, wall = time.process_time(), time.perf_counter()
got = asyncio.run(run())
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
answer.close()
stages = {
    key: float(np.mean([g["stages_ms"][key] for g in got])) for key in ("retrieval", "features")
}
json.dump(
    {
        "cpu_ms": 1000 * cpu / len(bodies),
        "first_ms": 1000 * first_wall,
        "wall_ms": 1000 * wall / len(bodies),
        "stages_ms": stages,
        "fallbacks": sum(g["fallback"] for g in got),
        "answers": [[[i["item_id"], i["score"]] for i in g["items"]] for g in got],
    },
    open(out, "w"),
)
"""


def _run(source: Path, model_dir: Path, requests: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source / "src"), "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-c", _CHILD, str(model_dir), str(requests), str(out)],
        env=env,
        check=True,
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--baseline-source", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    results: dict[str, list[dict]] = {"this": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, source in (("this", here), ("baseline", args.baseline_source)):
                result = _run(source, args.model_dir, args.requests, Path(tmp) / f"{name}.json")
                results[name].append(result)
                print(
                    f"round {round_} {name:8s} cpu {result['cpu_ms']:.3f} ms/request, wall "
                    f"{result['wall_ms']:.3f}, first request {result['first_ms']:.0f} ms, "
                    f"stages {result['stages_ms']}, fallbacks "
                    f"{result['fallbacks']}",
                    flush=True,
                )
    medians = {name: statistics.median(r["cpu_ms"] for r in runs) for name, runs in results.items()}
    this, base = results["this"][-1]["answers"], results["baseline"][-1]["answers"]
    pairs = list(zip(this, base, strict=True))
    items_differ = sum([i for i, _ in a] != [i for i, _ in b] for a, b in pairs)
    gap = max(abs(x[1] - y[1]) for a, b in pairs for x, y in zip(a, b, strict=False))
    print(
        f"median CPU ms/request: this {medians['this']:.3f}, baseline {medians['baseline']:.3f}, "
        f"ratio {medians['this'] / medians['baseline']:.3f}"
    )
    print(f"requests whose top-10 differ: {items_differ} of {len(this)}; max |score gap| {gap:.3g}")


if __name__ == "__main__":
    main()
