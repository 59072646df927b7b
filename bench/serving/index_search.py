"""Bare single-query search time of the FAISS index kinds at several catalogue sizes.

Measures what ``--index auto``'s exact/approximate threshold rests on: for ``n`` items (a
random subset of a trained model's item vectors), each kind (``exact``, ``hnsw``, ``ivf``) is
built with :meth:`privrank.serving.index.FactorIndex.from_vectors` exactly as the server builds
it (recall check against exact search on 200 user vectors included), then searched one query at
a time on one thread (as a server worker does) with ``k`` results for user vectors of the
model.

Usage::

    .venv/bin/python bench/serving/index_search.py --model /tmp/pbs/models/v1 \\
        --sizes 10000,30000,100000 --queries 2000 --out /tmp/index_search.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="A saved factor model.")
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument(
        "--kinds",
        default="exact,hnsw,ivf,ivf:0",
        help="Kinds; 'kind:floor' overrides --floor (ivf:0 keeps the default nprobe).",
    )
    parser.add_argument("--floor", type=float, default=0.95, help="Recall floor (as served).")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=30, help="Results per search (10 + ~20 seen).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from privrank.models import Recommender
    from privrank.serving.index import FactorIndex

    model = Recommender.load(args.model)
    all_items = np.asarray(model.item_factors_, dtype=np.float32)
    users = np.asarray(model.user_factors_, dtype=np.float32)
    rng = np.random.default_rng(0)
    check = users[rng.choice(users.shape[0], 200, replace=False)]
    queries = users[rng.choice(users.shape[0], args.queries, replace=False)]
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        items = all_items[np.sort(rng.choice(all_items.shape[0], n, replace=False))]
        for spec in args.kinds.split(","):
            kind, _, floor = spec.partition(":")
            floor = float(floor) if floor else args.floor
            index = FactorIndex.from_vectors(items, check, kind=kind, recall_floor=floor)
            rounds = []
            for _ in range(args.rounds):
                times = []
                for q in queries:
                    started = time.perf_counter()
                    index.search(q[None, :], args.k)
                    times.append(time.perf_counter() - started)
                rounds.append(times)
            p50s = [1000 * statistics.median(t) for t in rounds]
            row = {
                "n_items": n,
                "kind": kind,
                "recall_floor": floor,
                "params": index.report.params,
                "build_s": round(index.report.build_s, 3),
                "recall_at_10": index.report.recall,
                "search_p50_ms": statistics.median(p50s),
                "search_p50_rounds_ms": [round(p, 4) for p in p50s],
                "search_p99_ms": 1000 * float(np.quantile(np.concatenate(rounds), 0.99)),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
            rows.append(row)
            print(
                f"{n:>7} {spec:5} p50 {row['search_p50_ms']:.3f} ms "
                f"(rounds {row['search_p50_rounds_ms']}) "
                f"p99 {row['search_p99_ms']:.3f} ms recall@10 {row['recall_at_10']:.3f} "
                f"build {row['build_s']:.2f}s {row['params']} load {row['loadavg']}",
                flush=True,
            )
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": str(args.model),
        "dim": int(all_items.shape[1]),
        "k": args.k,
        "queries": args.queries,
        "rounds": args.rounds,
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
