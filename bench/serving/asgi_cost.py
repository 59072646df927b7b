"""CPU time per request of the privrank ASGI app, without the network: a measure that a busy
machine barely disturbs (CPU time, not wall time), for comparing two commits side by side.

The app is built exactly as a ``privrank serve`` worker builds it (``create_app`` with the
bench's model, serving database and index) and called directly with ``POST /v1/recommend``
requests (``{"user_id": <one of the bench's users>, "k": 10}``, a ``service`` key), one after
another on one event loop (uvloop, as uvicorn uses). Excluded: uvicorn's HTTP parsing and
the socket writes, which are the same for both commits.

Usage (from the repository root; ``--source`` serves another checkout's ``src/``)::

    .venv/bin/python bench/serving/asgi_cost.py --workdir /tmp/privrank-bench-serving \
        --source /work/wt/serve-base --source . --requests 2000 --rounds 5

Prints one JSON object: per source, the CPU µs per request of each round and their median,
and the ratio of the first source's median to each other's. ``--cprofile`` instead profiles
``--requests`` requests of the first source and prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import asyncio, json, sys, time
import uvloop
from privrank.serving.app import create_app
from privrank.serving.settings import ServeSettings

info, index = json.loads(sys.argv[1]), sys.argv[4]
requests, rounds = int(sys.argv[2]), int(sys.argv[3])
home = info["home"]
settings = ServeSettings(
    model_dir=info["models"]["v1"],
    database_url=f"sqlite:///{home}/serving.sqlite",
    rate_limit=0,
    index=index,
)
app = create_app(settings)
key = info["keys"]["service"].encode()
users = info["users"]
bodies = [json.dumps({"user_id": u, "k": 10}).encode() for u in users]


def scope(body):
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/recommend", "raw_path": b"/v1/recommend",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
        "headers": [
            (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
            (b"authorization", b"Bearer " + key), (b"content-length", str(len(body)).encode()),
        ],
    }


async def call(body):
    sent = []
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}
    async def send(message):
        sent.append(message)
    await app(scope(body), receive, send)
    status = sent[0]["status"]
    if status != 200:
        raise SystemExit(f"status {status}: {sent[1].get('body')!r}")


async def main():
    for body in bodies[:50]:  # warm-up: the key is verified once and cached
        await call(body)
    per_round = []
    for r in range(rounds):
        started = time.process_time()
        for i in range(requests):
            await call(bodies[(r * requests + i) % len(bodies)])
        per_round.append(1e6 * (time.process_time() - started) / requests)
    print(json.dumps(per_round))

async def profile():
    import cProfile
    import pstats

    for body in bodies[:50]:
        await call(body)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(requests):
        await call(bodies[i % len(bodies)])
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    print(json.dumps([]))

uvloop.run(profile() if rounds == 0 else main())
"""


def measure(
    source: Path, info: dict, requests: int, rounds: int, index: str, show_stderr: bool = False
) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(source.resolve() / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(info), str(requests), str(rounds), index],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{source}: {out.stderr[-2000:]}")
    if show_stderr:
        print(out.stderr, file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/privrank-bench-serving"))
    parser.add_argument("--source", type=Path, action="append", required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--index", default="auto")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="instead: cProfile --requests requests of the first source (printed to stderr)",
    )
    args = parser.parse_args(argv)
    if args.cprofile:
        info = json.loads((args.workdir / "setup.json").read_text())
        measure(args.source[0], info, args.requests, 0, args.index, show_stderr=True)
        return 0
    info = json.loads((args.workdir / "setup.json").read_text())
    results = {}
    # Alternate the sources round by round (one subprocess per source and pass), so that both
    # see the same machine.
    passes = {str(s): [] for s in args.source}
    for _ in range(2):
        for source in args.source:
            passes[str(source)].extend(
                measure(source, info, args.requests, args.rounds, args.index)
            )
    for source, rounds in passes.items():
        results[source] = {"us_per_request_rounds": rounds, "median": statistics.median(rounds)}
    first = results[str(args.source[0])]["median"]
    print(
        json.dumps(
            {
                "requests_per_round": args.requests,
                "index": args.index,
                "results": results,
                "ratio_first_over": {s: first / r["median"] for s, r in results.items()},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
