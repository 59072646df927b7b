"""Personalised search vs unpersonalised BM25 + embedding search (issue 14, search target).

Target: on the offline search protocol (``ml100k-search``, :mod:`privrank.workflow.
search_protocol`), personalised search beats unpersonalised BM25 + embedding search (reciprocal
rank fusion) by >= 10 % relative NDCG@10, same run, same queries.

Data sets: only ML-100K has item text among the data on hand (``u.item`` titles and genres);
Amazon Beauty and Video hold integer ids only (see ``privrank.data.item_text``), so the search
task exists on ML-100K alone.

1. **Settings on validation.** ``train`` of ``ml100k-holdout`` is carved again (per-user random
   20 % holdout, seed 0): the rankers train on the rest (which they carve once more, inside
   ``fit``, for their own training queries) and each grid point is scored by NDCG@10 of
   validation queries built from the carved 20 % (the test part is not read). The grid is
   ``candidates`` x ``rounds``; the best personalised point is kept.
2. **Test.** With the chosen settings, the three systems (``bm25+embedding``,
   ``ltr-unpersonalised``: the same LambdaMART ranker on query features and popularity only,
   and ``personalised``) on the protocol's test queries: NDCG@10 with bootstrap CIs, paired t
   and Wilcoxon tests against the baseline, the relative gain (the target), fit times, and the
   time per query of each system (median of ``--repeats`` passes over all queries).

Usage::

    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_search.py \\
        --out bench/results/search.json
    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_search.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privrank.atomic import atomic_file
from privrank.data.item_text import load_item_text
from privrank.data.splits import HoldoutSplit, split
from privrank.ranking.search import PersonalisedSearch, SearchConfig
from privrank.workflow.protocols import prepare
from privrank.workflow.search_protocol import (
    BASELINE,
    evaluate_search,
    resolve_search_protocol,
    search_parts,
)

TARGET = 0.10


def _validation(spec: Any, grid: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict]]:
    parts = prepare(spec.base)
    carve = split(parts.train, HoldoutSplit(fraction=0.2, seed=0))
    prepared = search_parts(spec, carve.train, carve.test, carve.train)
    rows = []
    for point in grid:
        started = time.perf_counter()
        result = evaluate_search(prepared, point, resamples=200, systems=("personalised",))
        rows.append(
            point
            | {
                "ndcg@10": result.cis["personalised"].estimate,
                "baseline_ndcg@10": result.cis[BASELINE].estimate,
                "seconds": time.perf_counter() - started,
            }
        )
        print(f"validation {point}: personalised {rows[-1]['ndcg@10']:.4f}", flush=True)
    best = max(rows, key=lambda r: r["ndcg@10"])
    return {k: best[k] for k in grid[0]}, rows


def _latency(spec: Any, config: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds per query of each system, over ``repeats`` passes (one process)."""
    prepared = search_parts(spec, *_test_parts(spec))
    text = load_item_text(spec.item_text)
    engines = {
        "ltr-unpersonalised": PersonalisedSearch(config | {"personalised": False}),
        "personalised": PersonalisedSearch(config | {"personalised": True}),
    }
    for engine in engines.values():
        engine.fit(prepared.train, text)
    texts = [q.text for q in prepared.queries]
    times: dict[str, list[float]] = {name: [] for name in (BASELINE, *engines)}
    for _ in range(repeats):
        for name, engine in engines.items():
            if name == "personalised":
                started = time.perf_counter()
                engine.search(texts, prepared.histories, 10, rerank=False)
                times[BASELINE].append((time.perf_counter() - started) / len(texts))
            started = time.perf_counter()
            engine.search(texts, prepared.histories, 10)
            times[name].append((time.perf_counter() - started) / len(texts))
    single = engines["personalised"]
    one = []
    for position in range(min(50, len(texts))):
        started = time.perf_counter()
        single.search([texts[position]], [prepared.histories[position]], 10)
        one.append(time.perf_counter() - started)
    out = {f"{name}_s_per_query_batched": statistics.median(v) for name, v in times.items()}
    out["personalised_s_single_query_median"] = statistics.median(one)
    return out


def _test_parts(spec: Any) -> tuple[Any, Any, Any]:
    parts = prepare(spec.base)
    return parts.train, parts.test, parts.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", default="ml100k-search")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one grid point, one repeat")
    args = parser.parse_args()
    spec = resolve_search_protocol(args.protocol)
    grid = [
        {"candidates": c, "rounds": r}
        for c in ((200,) if args.quick else (100, 200))
        for r in ((200,) if args.quick else (100, 300))
    ]
    started = time.perf_counter()
    chosen, validation = _validation(spec, grid)
    print(f"chosen on validation: {chosen}", flush=True)
    config = SearchConfig(**chosen).model_dump()
    result = evaluate_search(spec, config)
    summary = result.to_dict()
    gain = summary["paired_vs_" + BASELINE]["personalised"]["relative"]
    latency = _latency(spec, config, 1 if args.quick else args.repeats)
    report = {
        "bench": "search",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "protocol": spec.model_dump(),
        "grid": grid,
        "validation": validation,
        "chosen": chosen,
        "test": summary,
        "latency": latency,
        "target_relative_gain": TARGET,
        "relative_gain": gain,
        "target_met": gain is not None and gain >= TARGET,
        "seconds": time.perf_counter() - started,
    }
    for name, ci in summary["ndcg"].items():
        print(f"{name:>20}: NDCG@10 {ci['estimate']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]")
    print(f"personalised vs {BASELINE}: {gain:+.1%} (target >= +{TARGET:.0%})")
    print(json.dumps(latency))
    if args.out is not None:
        with atomic_file(args.out, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
