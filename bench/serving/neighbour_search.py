"""Item-item models at serving time: dense model scoring vs the sparse top-k neighbour matrix.

For ItemKNN and EASE fitted on synthetic data (saved and loaded again, as a server loads
them), times one known user's top-10 answer (seen items
excluded) through the model (``Recommender.recommend``: score every item, mask, top-k) and
through :class:`privrank.serving.neighbours.NeighbourIndex` (history row × sparse matrix) for
each ``k`` (weights kept per item; ``all`` = every non-zero), and reports the recall@10 and
largest score error the server reports at load.

Usage::

    .venv/bin/python bench/serving/neighbour_search.py --items 5000 --users 20000 \\
        --interactions 300000 --out /tmp/neighbour_search.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def _time(fn, users) -> float:
    times = []
    for user in users:
        started = time.perf_counter()
        fn(user)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--interactions", type=int, default=300_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ks", default="all,200,50,20")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from privrank.data.synthetic import SyntheticConfig, generate
    from privrank.models import FitOptions, Query, Recommender, create_model
    from privrank.serving.neighbours import NeighbourIndex

    data = generate(
        SyntheticConfig(
            n_users=args.users, n_items=args.items, n_interactions=args.interactions, seed=0
        )
    )
    rows = []
    for name, config in (("itemknn", {"neighbors": 100}), ("ease", {"regularization": 300.0})):
        started = time.perf_counter()
        fitted = create_model(name, config).fit(data, FitOptions(seed=0, threads=2))
        fit_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:  # served models are loaded from disk
            fitted.save(Path(tmp) / name)
            model = Recommender.load(Path(tmp) / name)
        indptr, items = model.history_indptr_, model.history_items_
        rng = np.random.default_rng(1)
        users = rng.choice(np.flatnonzero(np.diff(indptr) > 0), args.queries, replace=False)
        dense_ms = _time(lambda u, m=model: m.recommend(Query.users([u]), 10), users)
        for k in args.ks.split(","):
            keep = None if k == "all" else int(k)
            index = NeighbourIndex.build(model, keep, recall_floor=0.0)
            report = index.report

            def sparse(u, index=index, items=items, indptr=indptr):
                seen = items[indptr[u] : indptr[u + 1]]
                index.top(seen, 10, set(seen.tolist()))

            row = {
                "model": name,
                "n_items": int(model.n_items_),
                "fit_s": round(fit_s, 2),
                "k": k,
                "nnz": report.nnz,
                "exact": report.exact,
                "recall_at_10": report.recall,
                "max_score_error": report.max_score_error,
                "build_s": round(report.build_s, 2),
                "dense_p50_ms": dense_ms,
                "sparse_p50_ms": _time(sparse, users),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
            rows.append(row)
            print(
                f"{name:8} k={k:>4} nnz {row['nnz']:>9,} exact {row['exact']!s:5} "
                f"recall@10 {row['recall_at_10']:.3f} err {row['max_score_error']:.2g} "
                f"dense {row['dense_p50_ms']:.3f} ms sparse {row['sparse_p50_ms']:.3f} ms "
                f"build {row['build_s']}s load {row['loadavg']}",
                flush=True,
            )
    if args.out:
        args.out.write_text(
            json.dumps(
                {"date": datetime.now(UTC).isoformat(timespec="seconds"), "rows": rows}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
