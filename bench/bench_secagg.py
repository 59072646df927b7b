"""SecAgg+ cost: client time, server time and bytes per round, 100 → 10,000 clients, with dropout.

Every round is the real protocol (:func:`privrank.privacy.crypto.secagg.run_round`): X25519
key agreement + HKDF, Shamir shares of the self-mask seed and the mask key among each client's
k + 1 holders, AES-GCM-encrypted through the server, AES-CTR masks, unmasking with recovery of
the clients that dropped. All parties run in this one process, one after the other; times are
each party's own computation (``time.perf_counter`` around its calls), not network time.

- Updates: ``--dim`` coordinates uniform in [−1, 1], fixed-point in Z_2^32 at scale 2^16; the
  released sum is checked against the plaintext sum of the quantised updates (exact).
- Dropout: a fraction ``p`` of the clients drops *after sharing keys*, before sending its
  masked input (the expensive case: the server must recover each one's mask key and remove its
  pairwise masks from its surviving neighbours' inputs).
- Times: CPU time of each party's calls (``time.thread_time``; the table also keeps wall
  time), because the machine is shared and wall time swings with other people's load.
- Peer: plain SecAgg (the complete graph, k = n − 1, same code with ``degree = n − 1``) on the
  smaller sizes in the same run, to show its server cost growing as n² where SecAgg+ grows
  close to n log n.

Writes a JSON of every round and a PNG of server time against n with n log n and n² guides.

Usage::

    .venv/bin/python bench/bench_secagg.py --clients 100,300,1000,3000,10000 \\
        --dropouts 0,0.1,0.3 --dim 1000 --peer-clients 100,200,400
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from privrank.atomic import atomic_file
from privrank.privacy.crypto.secagg import FixedPointRing, SecAggConfig, encode_batch, run_round

RING = FixedPointRing(modulus_bits=32, clip=1.0, scale=2.0**16)


def one_round(n: int, dim: int, dropout: float, seed: int, degree: int | None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    updates = rng.uniform(-1.0, 1.0, size=(n, dim))
    encoded, _ = encode_batch(RING, updates)
    # Independent of the graph's permutation (random.Random(seed) in the server).
    dropped = {int(c) for c in rng.choice(n, size=round(dropout * n), replace=False)}
    config = SecAggConfig(modulus_bits=32, degree=degree, round_id=seed)
    start = time.perf_counter()
    out = run_round(encoded, config, drop_after_sharing=dropped, graph_seed=seed)
    wall = time.perf_counter() - start
    survivors = list(out.result.survivors)
    expected = RING.to_ring(np.rint(updates[survivors] * RING.scale).astype(np.int64).sum(axis=0))
    exact = bool(np.array_equal(expected, out.result.total))
    cost = out.cost
    alive = np.array([c not in dropped for c in range(n)])
    return {
        "n": n,
        "dim": dim,
        "dropout": dropout,
        "protocol": "secagg+" if degree is None else "secagg (complete graph)",
        "degree": cost.degree,
        "threshold": cost.threshold,
        "survivors": len(survivors),
        "recovered": len(out.result.recovered),
        "exact_sum": exact,
        "client_seconds_median": float(np.median(cost.client_seconds[alive])),
        "client_seconds_p95": float(np.quantile(cost.client_seconds[alive], 0.95)),
        "client_seconds_total": float(cost.client_seconds.sum()),
        "server_seconds": cost.server_seconds,
        "client_cpu_seconds_median": float(np.median(cost.client_cpu_seconds[alive])),
        "client_cpu_seconds_p95": float(np.quantile(cost.client_cpu_seconds[alive], 0.95)),
        "server_cpu_seconds": cost.server_cpu_seconds,
        "bytes_up": cost.bytes_up,
        "bytes_down": cost.bytes_down,
        "bytes_per_client_up": cost.bytes_up / n,
        "bytes_per_client_down": cost.bytes_down / n,
        "wall_seconds": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average": os.getloadavg()[0],
    }


def _slope(rows: list[dict[str, Any]], key: str) -> float:
    x = np.log([r["n"] for r in rows])
    y = np.log([r[key] for r in rows])
    return float(np.polyfit(x, y, 1)[0])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plus = [r for r in rows if r["protocol"] == "secagg+"]
    for p in sorted({r["dropout"] for r in plus}):
        series = sorted((r for r in plus if r["dropout"] == p), key=lambda r: r["n"])
        ax.plot(
            [r["n"] for r in series],
            [r["server_cpu_seconds"] for r in series],
            "o-",
            label=f"SecAgg+ server, dropout {p:.0%}",
        )
    peer = sorted((r for r in rows if r["protocol"] != "secagg+"), key=lambda r: r["n"])
    if peer:
        ax.plot(
            [r["n"] for r in peer],
            [r["server_cpu_seconds"] for r in peer],
            "s--",
            color="grey",
            label=f"SecAgg (complete graph) server, dropout {peer[0]['dropout']:.0%}",
        )
    anchor = min(
        (r for r in plus if r["dropout"] == max(q["dropout"] for q in plus)), key=lambda r: r["n"]
    )
    ns = np.geomspace(anchor["n"], max(r["n"] for r in plus), 50)
    n0, t0 = anchor["n"], anchor["server_cpu_seconds"]
    ax.plot(ns, t0 * ns * np.log(ns) / (n0 * math.log(n0)), ":", color="black", label="∝ n log n")
    ax.plot(ns, t0 * (ns / n0) ** 2, "-.", color="red", alpha=0.5, label="∝ n²")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients per round (n)")
    ax.set_ylabel("server CPU time per round (s)")
    ax.set_title(f"SecAgg+ server cost, d = {plus[0]['dim']}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="100,300,1000,3000,10000")
    parser.add_argument("--dropouts", default="0,0.1,0.3")
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--peer-clients", default="100,200,400")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/secagg_cost.json"))
    parser.add_argument("--png", type=Path, default=Path("bench/results/secagg_cost.png"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.clients.split(",") if s]
    dropouts = [float(p) for p in args.dropouts.split(",") if p]
    peers = [int(s) for s in args.peer_clients.split(",") if s]
    rows: list[dict[str, Any]] = []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    header = (
        f"{'protocol':<24}{'n':>7}{'drop':>6}{'k':>4}{'t':>4}{'client cpu ms':>14}"
        f"{'server cpu s':>13}{'server s':>10}{'up MB':>9}{'down MB':>9}{'exact':>7}"
    )
    print(header, flush=True)

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        print(
            f"{row['protocol']:<24}{row['n']:>7}{row['dropout']:>6.0%}{row['degree']:>4}"
            f"{row['threshold']:>4}{row['client_cpu_seconds_median'] * 1e3:>14.1f}"
            f"{row['server_cpu_seconds']:>13.2f}{row['server_seconds']:>10.2f}"
            f"{row['bytes_up'] / 1e6:>9.2f}"
            f"{row['bytes_down'] / 1e6:>9.2f}{row['exact_sum']!s:>7}",
            flush=True,
        )
        payload = {
            "started": started,
            "machine": f"{platform.node()} ({os.cpu_count()} cores), shared with parallel work",
            "command": " ".join([sys.executable, *sys.argv]),
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(args.out) as handle:
            handle.write(json.dumps(payload, indent=1))

    for n in peers:
        record(one_round(n, args.dim, dropouts[0], args.seed + n, degree=n - 1))
    for n in sizes:
        for p in dropouts:
            record(one_round(n, args.dim, p, args.seed + n, degree=None))
    plus = [r for r in rows if r["protocol"] == "secagg+"]
    for p in dropouts:
        series = [r for r in plus if r["dropout"] == p]
        if len(series) > 1:
            per = [r["server_cpu_seconds"] / (r["n"] * math.log(r["n"])) * 1e6 for r in series]
            slope = _slope(series, "server_cpu_seconds")
            print(
                f"dropout {p:.0%}: server CPU log-log slope {slope:.2f}"
                f" (n log n over this range ≈ {_slope_nlogn(series):.2f}, n² = 2); "
                f"server CPU µs / (n ln n): " + ", ".join(f"{v:.1f}" for v in per)
            )
    peer_rows = [r for r in rows if r["protocol"] != "secagg+"]
    if len(peer_rows) > 1:
        slope = _slope(peer_rows, "server_cpu_seconds")
        print(f"SecAgg complete graph: server CPU log-log slope {slope:.2f}")
    if rows:
        print(f"all sums exact: {all(r['exact_sum'] for r in rows)}")
        plot(rows, args.png)
        print(f"wrote {args.out} and {args.png}")
    return 0


def _slope_nlogn(rows: list[dict[str, Any]]) -> float:
    x = np.log([r["n"] for r in rows])
    y = np.log([r["n"] * math.log(r["n"]) for r in rows])
    return float(np.polyfit(x, y, 1)[0])


if __name__ == "__main__":
    raise SystemExit(main())
