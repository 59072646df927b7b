"""Bad-key flood (its own process): a fixed rate of requests carrying credentials that fail,
sent from one or many loopback source addresses.

Request ``i`` is due at ``t0 + i / rate`` (open loop, like ``loadgen.py``) and is sent from
source address ``i mod len(addresses)``: on Linux any 127/8 address can be bound, so a flood
spread over ``127.0.1.1 .. 127.0.1.N`` looks to the server like ``N`` clients, and the
per-address limit on failed authentications does not stop it (every key is verified: the
worst case); a flood from one address mostly gets 429 after the burst.

The credentials are, in turn by ``--mix``:

- ``random``: well-formed ``prk_<12 hex>_<43 url-safe chars>`` keys with a random id (the
  server looks the id up and finds nothing);
- ``known-id``: the id of a real key (``--known-ids``) with a random secret (the row is found,
  the HMAC computed and compared: the whole verification);
- ``malformed``: wrong prefix, wrong length, bad characters, an empty-ish or overlong value,
  a broken user token.

``--method GET`` sends plain ``GET --path`` requests without a credential instead (the bench
uses ``/healthz`` as a control: as many extra requests, no authentication).

Usage (the bench runs it)::

    python bench/serving/badkeys.py --port 8000 --rate 200 --duration 10 \
        --addresses 127.0.1.1-127.0.1.250 --out flood.json

The result is JSON: offered rate, sent, completed, status counts (per kind too), errors,
latency percentiles of the bad-key answers (ms) and how late requests were dispatched.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import string
import sys
import time
from collections import Counter

from loadgen import _check_loopback, _exchange, _request, open_loop

_SECRET = string.ascii_letters + string.digits + "-_"


def parse_addresses(spec: str) -> list[str]:
    """``"127.0.0.2"``, ``"127.0.1.1-127.0.1.250"`` or a comma-separated mix of both."""
    out: list[str] = []
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        start = ipaddress.IPv4Address(first)
        end = ipaddress.IPv4Address(last) if last else start
        out.extend(str(ipaddress.IPv4Address(n)) for n in range(int(start), int(end) + 1))
    for address in out:
        _check_loopback(address)
    return out


def make_keys(rng: random.Random, n: int, known_ids: list[str], mix: dict[str, float]):
    """``n`` (kind, credential) pairs drawn by ``mix`` (kind -> share)."""
    kinds = [k for k, share in mix.items() if share > 0 and (k != "known-id" or known_ids)]
    weights = [mix[k] for k in kinds]

    def secret(length: int = 43) -> str:
        return "".join(rng.choice(_SECRET) for _ in range(length))

    def malformed() -> str:
        return rng.choice(
            [
                f"prk_{rng.getrandbits(48):012x}_{secret(42)}",  # one char short
                f"prk_{rng.getrandbits(48):012x}_{secret(44)}",  # one char long
                f"prk_{rng.getrandbits(40):010x}_{secret()}",  # short id
                f"prk_{rng.getrandbits(48):012X}_{secret()}",  # upper-case id
                f"prk_{rng.getrandbits(48):012x}_{secret(40)}!!!",  # bad characters
                f"key_{rng.getrandbits(48):012x}_{secret()}",  # wrong prefix
                "x",
                secret(rng.randint(1, 200)),
                "A" * 4000,  # long, below the header limit
                f"prt_{secret(20)}.{secret(60)}.{secret(43)}",  # a broken user token
                f"eyJhbGciOiJIUzI1NiJ9.{secret(60)}.{secret(43)}",  # a bare JWT-looking value
            ]
        )

    out = []
    for _ in range(n):
        kind = rng.choices(kinds, weights)[0]
        if kind == "random":
            out.append((kind, f"prk_{rng.getrandbits(48):012x}_{secret()}"))
        elif kind == "known-id":
            out.append((kind, f"prk_{rng.choice(known_ids)}_{secret()}"))
        else:
            out.append((kind, malformed()))
    return out


async def run(args: argparse.Namespace) -> dict:
    _check_loopback(args.host)
    addresses = parse_addresses(args.addresses)
    rng = random.Random(args.seed)
    known_ids = [k for k in args.known_ids.split(",") if k]
    mix = {"random": args.random_share, "known-id": args.known_share, "malformed": args.bad_share}
    n = int(args.rate * args.duration)
    keys = make_keys(rng, n, known_ids, mix)
    users = args.users.split(",")
    if args.method == "GET":  # a control: as many requests, no credential to check
        keys = [("get", "")] * n
        bodies = [f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()] * n
    else:
        bodies = [
            _request(
                args.host,
                args.port,
                key,
                args.path,
                json.dumps({"user_id": rng.choice(users), "k": 10}).encode(),
            )
            for _kind, key in keys
        ]
    # Idle keep-alive connections per source address (opened on demand, no upper limit: a
    # flood does not wait for the server).
    idle: dict[str, list] = {a: [] for a in addresses}
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    by_kind: dict[str, Counter[int]] = {}
    errors: Counter[str] = Counter()
    lateness: list[float] = []
    opened = 0

    async def one(i: int, due: float) -> None:
        nonlocal opened
        address = addresses[i % len(addresses)]
        now = time.perf_counter()
        connection = None
        while idle[address]:
            reader, writer, since = idle[address].pop()
            if now - since < args.idle_expiry:
                connection = (reader, writer)
                break
            writer.close()
        try:
            if connection is None:
                connection = await asyncio.open_connection(
                    args.host, args.port, local_addr=(address, 0)
                )
                opened += 1
        except OSError as exc:
            errors[type(exc).__name__] += 1
            return
        reader, writer = connection
        try:
            status, _body, keep = await asyncio.wait_for(
                _exchange(reader, writer, bodies[i]), args.timeout
            )
        except asyncio.IncompleteReadError as exc:
            errors["closed-before-response" if not exc.partial else "closed-mid-response"] += 1
            writer.close()
            return
        except (OSError, TimeoutError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            writer.close()
            return
        latencies.append(time.perf_counter() - due)
        statuses[status] += 1
        by_kind.setdefault(keys[i][0], Counter())[status] += 1
        if keep:
            idle[address].append((reader, writer, time.perf_counter()))
        else:
            writer.close()

    elapsed = await open_loop(n, args.rate, one, lateness)
    for connections in idle.values():
        for _reader, writer, _since in connections:
            writer.close()

    latencies.sort()
    lateness.sort()

    def pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        return 1000 * values[min(len(values) - 1, int(q * len(values)))]

    return {
        "offered_rps": args.rate,
        "duration_s": args.duration,
        "addresses": len(addresses),
        "address_range": args.addresses,
        "sent": n,
        "completed": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "statuses_by_kind": {
            kind: {str(k): v for k, v in sorted(c.items())} for kind, c in sorted(by_kind.items())
        },
        "kinds": dict(Counter(kind for kind, _ in keys)),
        "errors": dict(errors),
        "elapsed_s": elapsed,
        "achieved_rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": pct(latencies, 1.0),
        "dispatch_late_p99_ms": pct(lateness, 0.99),
        "connections_opened": opened,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/recommend")
    parser.add_argument(
        "--method",
        default="POST",
        choices=["POST", "GET"],
        help="GET: plain GETs of --path without a credential (a control for the request rate)",
    )
    parser.add_argument("--rate", type=float, required=True, help="bad keys per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of flood")
    parser.add_argument(
        "--addresses", default="127.0.0.2", help="source addresses: A, A-B, comma-separated"
    )
    parser.add_argument("--users", default="0", help="comma-separated user ids in the bodies")
    parser.add_argument("--known-ids", default="", help="ids of real keys (known-id kind)")
    parser.add_argument("--random-share", type=float, default=0.8)
    parser.add_argument("--known-share", type=float, default=0.1)
    parser.add_argument("--bad-share", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--idle-expiry", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
