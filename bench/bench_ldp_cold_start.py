"""Local-DP popularity (telemetry) against central DP-MostPopular as the cold-start ranking.

Issue 12, item 3: item popularity collected under local DP becomes the cold-start ranking of
federated models (``privrank federated train --popularity-prior``); compare it with central
DP-MostPopular at equal ε. For each data set, in one run:

- **ldp-cms / ldp-hcms**: every training user is a device with all its training events on one
  day; it sends one report of one event drawn uniformly, randomised at ε per user-day
  (:func:`privrank.privacy.local_dp.telemetry.randomise_days`, the code behind ``privrank
  telemetry randomise``), decoded by the server (:func:`decode_reports`, the code behind
  ``privrank telemetry ingest``); m = k = 1,024 (the defaults).
- **central DP-MostPopular**: :class:`~privrank.models.MostPopular` with user-level (ε, δ =
  1/(10·users)) Gaussian noise on item counts, each user capped at c items (uniform selection);
  c = 1 (the same estimand as one report) and c = 50.
- **MostPopular** (non-private): the reference.

Metrics, for the cold-start ranking (one ranking for every user, nothing excluded):
NDCG@10 of the test users' test items, treating every test user as a new user (computed here by
hand: DCG over the shared top-10, IDCG over min(|test items|, 10)); and recall@100 of the true
top-100 items by training popularity (users per item). Median over ``--repeats`` draws (fresh
device randomness, hash family and noise each).

Usage::

    .venv/bin/python bench/bench_ldp_cold_start.py --datasets ml100k-holdout,beauty-loo,synthetic \\
        --synthetic-users 100000 --epsilon 4 --repeats 5 --json bench/results/ldp_cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np

from privrank.models import FitOptions, MostPopular
from privrank.privacy.local_dp import SketchConfig
from privrank.privacy.local_dp.telemetry import decode_reports, randomise_days
from privrank.privacy.spec import PrivacySpec


def cold_ndcg(scores: np.ndarray, test_indptr: np.ndarray, test_items: np.ndarray) -> float:
    """Mean NDCG@10 of one shared ranking over the test users (by hand)."""
    top = np.lexsort((np.arange(len(scores)), -scores))[:10]
    gain = np.zeros(len(scores))
    gain[top] = 1.0 / np.log2(np.arange(2, 12))
    values = []
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, 12)))
    for u in range(len(test_indptr) - 1):
        rel = test_items[test_indptr[u] : test_indptr[u + 1]]
        if len(rel) == 0:
            continue
        values.append(gain[rel].sum() / discounts[min(len(rel), 10) - 1])
    return float(np.mean(values))


def recall_top(scores: np.ndarray, truth: np.ndarray, k: int = 100) -> float:
    def top(v: np.ndarray) -> set[int]:
        return set(np.lexsort((np.arange(len(v)), -v))[:k].tolist())

    return len(top(scores) & top(truth)) / k


def load(name: str, synthetic_users: int) -> tuple[Any, Any]:
    if name == "synthetic":
        from bench_federated import synthetic_split

        return synthetic_split(synthetic_users, synthetic_users)
    from privrank.workflow.protocols import prepare

    prepared = prepare(name)
    return prepared.train, prepared.test


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every arm on one data set, ``args.repeats`` draws each."""
    started = time.perf_counter()
    train, test = load(name, args.synthetic_users)
    indptr, codes = train.sequences()
    user_ids = train.user_ids.to_pylist()
    item_ids = [str(x) for x in train.item_ids.to_pylist()]
    users = np.repeat(np.asarray(user_ids, dtype=object), np.diff(indptr)).tolist()
    items = [item_ids[i] for i in codes.tolist()]
    days = ["2026-12-04"] * len(items)
    popularity = np.diff(train.to_csr().tocsc().indptr).astype(np.float64)
    # the test items in the training vocabulary (prepare() shares it)
    t_indptr, t_items = test.sequences()
    print(f"{name}: {train} / {test} loaded in {time.perf_counter() - started:.0f} s")
    arms: dict[str, list[dict[str, float]]] = {}

    def add(arm: str, scores: np.ndarray, **extra: float) -> None:
        row = {
            "ndcg@10": cold_ndcg(scores, t_indptr, t_items),
            "recall@100": recall_top(scores, popularity),
            **extra,
        }
        arms.setdefault(arm, []).append(row)
        print(name, arm, json.dumps(row), flush=True)

    add("most-popular", popularity)
    for r in range(args.repeats):
        rng = np.random.default_rng([r, 12])
        for kind in args.sketches.split(","):
            config = SketchConfig(kind=kind, epsilon=args.epsilon, hash_seed=r)
            tick = time.perf_counter()
            decoded = decode_reports(
                config, item_ids, randomise_days(config, users, items, days, rng)
            )
            add(f"ldp-{kind}", decoded.estimate, seconds=time.perf_counter() - tick)
        for cap in (int(c) for c in args.caps.split(",")):
            spec = PrivacySpec(
                epsilon=args.epsilon,
                max_interactions_per_user=cap,
                selection="uniform",
                selection_seed=r,
                noise_seed=r,
            )
            model = MostPopular().fit(train, FitOptions(seed=r, privacy=spec))
            add(f"central-dp-c{cap}", model.item_popularity_.astype(np.float64))
    summary = {
        arm: {
            metric: statistics.median(row[metric] for row in rows)
            for metric in ("ndcg@10", "recall@100")
        }
        for arm, rows in arms.items()
    }
    return {
        "users": train.n_users,
        "items": train.n_items,
        "rows": len(train),
        "median": summary,
        "runs": arms,
    }
    print(name, json.dumps(summary, indent=1), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml100k-holdout,beauty-loo,synthetic")
    parser.add_argument("--synthetic-users", type=int, default=100_000)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--caps", default="1,50")
    parser.add_argument("--sketches", default="cms,hcms,ocms")
    parser.add_argument("--json")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, load {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[str, Any] = {"args": vars(args), "datasets": {}}
    for name in args.datasets.split(","):
        results["datasets"][name] = run_dataset(name, args)
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
