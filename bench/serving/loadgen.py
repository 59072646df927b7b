"""Open-loop HTTP load generator (its own process): a fixed offered rate, latency measured from
each request's *scheduled* send time, so a slow server cannot hide its queueing (no coordinated
omission).

Request ``i`` is due at ``t0 + i / rate``. It takes an idle keep-alive connection (or opens one,
up to ``--connections``); when every connection is busy it waits for one, and that wait counts
in its latency. HTTP/1.1 is spoken directly over asyncio streams (a client library would cost
more CPU than the server it measures on a 2-core machine). Only loopback addresses are allowed.

Usage (the bench runs it)::

    python bench/serving/loadgen.py --port 8000 --key KEY --rate 500 --duration 10 \
        --users 0,1,2 --out result.json

The result is JSON: offered rate, sent, completed, status counts, errors, achieved throughput,
latency percentiles (ms), how late the generator itself dispatched requests, and the model
versions seen in answers.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import re
import sys
import time
from collections import Counter

_VERSION = re.compile(rb'"model_version":"([^"]*)"')


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"loadgen only talks to loopback addresses, not {host!r}")


def _request(host: str, port: int, key: str, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader, writer, payload: bytes) -> tuple[int, bytes, bool]:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, keep = 0, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    body = await reader.readexactly(length) if length else b""
    return status, body, keep


class Pool:
    """Keep-alive connections: idle ones are reused, new ones opened up to ``limit``."""

    def __init__(self, host: str, port: int, limit: int, idle_expiry_s: float) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle_expiry_s = idle_expiry_s
        self.idle: list = []  # (reader, writer, idle since)
        self.open = 0
        self.available = asyncio.Condition()

    async def get(self):
        async with self.available:
            while not self.idle and self.open >= self.limit:
                await self.available.wait()
            now = time.perf_counter()
            while self.idle:
                reader, writer, since = self.idle.pop()
                if now - since < self.idle_expiry_s:
                    return reader, writer
                # The server may close it any moment (uvicorn: 5 s): never reuse it.
                writer.close()
                self.open -= 1
            self.open += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except BaseException:
            await self.discard()
            raise

    async def put(self, connection) -> None:
        async with self.available:
            self.idle.append((*connection, time.perf_counter()))
            self.available.notify()

    async def discard(self, connection=None) -> None:
        if connection is not None:
            connection[1].close()
        async with self.available:
            self.open -= 1
            self.available.notify()


async def open_loop(n: int, rate: float, one, lateness: list[float]) -> float:
    """Start ``one(i, due)`` for ``i < n`` at ``rate`` per second whatever the answers (open
    loop), recording how late each start was; returns the elapsed seconds."""
    tasks = []
    started = time.perf_counter()
    for i in range(n):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(time.perf_counter() - due)
        tasks.append(asyncio.ensure_future(one(i, due)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict:
    _check_loopback(args.host)
    rng = random.Random(args.seed)
    if args.bodies:  # prepared JSON bodies, one a line, sent in turn
        with open(args.bodies, encoding="utf-8") as handle:
            lines = [line.strip().encode() for line in handle if line.strip()]
        bodies = [_request(args.host, args.port, args.key, args.path, line) for line in lines]
    else:
        users = args.users.split(",")
        bodies = [
            _request(
                args.host,
                args.port,
                args.key,
                args.path,
                json.dumps({"user_id": rng.choice(users), "k": args.k}).encode(),
            )
            for _ in range(min(4096, max(1, int(args.rate * args.duration))))
        ]
    pool = Pool(args.host, args.port, args.connections, args.idle_expiry)
    n = int(args.rate * args.duration)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    lateness: list[float] = []

    async def one(i: int, due: float) -> None:
        try:
            connection = await pool.get()
        except OSError as exc:
            errors[type(exc).__name__] += 1
            return
        reader, writer = connection
        try:
            status, body, keep = await asyncio.wait_for(
                _exchange(reader, writer, bodies[i % len(bodies)]), args.timeout
            )
        except asyncio.IncompleteReadError as exc:
            # EOF before a whole answer: "...-before-response" when not one byte came back.
            errors["closed-before-response" if not exc.partial else "closed-mid-response"] += 1
            await pool.discard(connection)
            return
        except (OSError, TimeoutError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            await pool.discard(connection)
            return
        latencies.append(time.perf_counter() - due)
        statuses[status] += 1
        found = _VERSION.search(body)
        if found:
            versions[found.group(1).decode()] += 1
        if keep:
            await pool.put(connection)
        else:
            await pool.discard(connection)

    elapsed = await open_loop(n, args.rate, one, lateness)
    for _reader, writer, _since in pool.idle:
        writer.close()

    latencies.sort()
    lateness.sort()

    def pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        return 1000 * values[min(len(values) - 1, int(q * len(values)))]

    ok = statuses.get(200, 0)
    return {
        "offered_rps": args.rate,
        "duration_s": args.duration,
        "sent": n,
        "completed": len(latencies),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "failed": n - ok,
        "elapsed_s": elapsed,
        "throughput_rps": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": pct(latencies, 0.50),
        "p90_ms": pct(latencies, 0.90),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": pct(latencies, 1.0),
        "dispatch_late_p99_ms": pct(lateness, 0.99),
        "connections_opened": pool.open,
        "model_versions": dict(versions),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--path", default="/v1/recommend")
    parser.add_argument("--rate", type=float, required=True, help="offered requests/s")
    parser.add_argument("--duration", type=float, required=True, help="seconds of load")
    parser.add_argument("--users", default="", help="comma-separated user ids to ask for")
    parser.add_argument(
        "--bodies", default=None, help="a file of JSON request bodies, one a line (no --users)"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument(
        "--idle-expiry",
        type=float,
        default=4.0,
        help="close keep-alive connections idle this long (below the server's 5 s timeout)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.bodies and not args.users:
        parser.error("give --users or --bodies")
    result = asyncio.run(run(args))
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
