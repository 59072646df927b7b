"""Shares of a serving worker's CPU by layer, from a py-spy raw profile.

Record one worker under load, then summarise::

    .venv/bin/py-spy record -p <worker pid> -d 12 -r 100 --gil --format raw -o prof.raw &
    .venv/bin/python bench/serving/loadgen.py --port <port> --key <service key> --rate 400 \
        --duration 10 --users <ids> --out /tmp/load.json
    .venv/bin/python bench/serving/profile_summary.py prof.raw [more.raw ...]

Each line is the share of samples whose stack contains the frame (inclusive time). ``--gil``
samples only the thread holding the GIL, so native code that releases it (the FAISS search)
is under-counted. This is the table of BENCHMARKS.md, "Serving at the machine's limit".
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

FRAMES = [
    ("uvicorn's request cycle", "RequestResponseCycle.run_asgi", "httptools_impl.py"),
    ("FastAPI routing and handler", "request_response.<locals>.app", "fastapi/routing.py"),
    ("dependency resolution", "solve_dependencies", "fastapi/dependencies/utils.py"),
    ("thread hand-off", "run_in_threadpool", "starlette/concurrency.py"),
    ("response validation and serialisation", "serialize_response", "fastapi/routing.py"),
    ("body read under the timeout", "BodySizeLimitMiddleware._receive_in_time", "middleware.py"),
    ("access-log line", "Logger.info", "logging/__init__.py"),
    ("the answer (recommend_user)", "recommend_user", "privrank/serving/recommend.py"),
    ("the hot path", "HotPathMiddleware.__call__", "privrank/serving/hot_path.py"),
    ("HTTP parsing", "HttpToolsProtocol.data_received", "httptools_impl.py"),
]
"""(label, function, end of its file name): py-spy frames read ``function (path:line)``."""


def inclusive_shares(path: str) -> tuple[int, collections.Counter]:
    """Total samples and, per (function, file), the samples whose stack holds it."""
    total, inclusive = 0, collections.Counter()
    with open(path) as handle:
        for line in handle:
            stack, _, count = line.rstrip().rpartition(" ")
            samples = int(count)
            total += samples
            frames = set()
            for frame in stack.split(";"):
                match = re.fullmatch(r"(.*) \((.*?):\d+\)", frame)
                if match:
                    frames.add((match.group(1), match.group(2)))
            for function, path in frames:
                inclusive[(function, path)] += samples
    return total, inclusive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+", help="py-spy --format raw files")
    args = parser.parse_args(argv)
    for path in args.profiles:
        total, inclusive = inclusive_shares(path)
        print(f"{path}: {total} samples")
        for label, function, ending in FRAMES:
            hits = max(
                (n for (f, p), n in inclusive.items() if f == function and p.endswith(ending)),
                default=0,
            )
            print(f"  {100 * hits / max(total, 1):5.1f} %  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
