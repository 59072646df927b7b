"""Privacy-utility at scale: DP-EASE vs EASE on synthetic data with 10k, 100k and 1M users.

User-level DP noise does not grow with the number of users while the statistics do, so the
private model should approach its non-private counterpart as users are added. This benchmark
measures that on :func:`privrank.data.synthetic.generate` data with a fixed catalogue
(``--items``, default 1,000 items in 20 clusters, Zipf exponent 1, cluster affinity 0.8,
``--per-user`` interactions per user on average, log-normal activity σ = 1.2, unique pairs):

- split: per-user random 80/20 holdout (seed 0), full ranking over all items, training items
  excluded;
- models: EASE (λ selected on the validation split below from ``REGULARIZATIONS``), and at
  each ε (default 1 and 8) DP-EASE and
  DP-MostPopular with user-level (ε, δ = 1/(10·users)) DP. DP-EASE uses the settings given on
  the command line (defaults: the ones selected on ML-100K's validation split at ε = 1: no
  row cap (1,000 = the catalogue), count norm √50, budget share 0.3 on counts, item-selection
  ratio 0.8, denoising 1), and at each scale and ε the Gram norm and denoising mode
  (``CANDIDATES``) are selected on a validation split carved from train (a further per-user
  80/20 holdout, seed 1, scored on up to ``--eval-users`` of its users); DP-MostPopular keeps
  ≤ 100 rows per user. Nothing is tuned on the test split;
- evaluation: NDCG@10 on a uniform sample of ``--eval-users`` test users (seed 0) when there
  are more, with a 95% bootstrap CI over those users; the ratio DP-EASE / EASE is the
  retention the issue targets (≥ 95% at 1M users, ε = 1).

Usage::

    .venv/bin/python bench/bench_privacy_scaling.py --users 10000 100000 1000000 \\
        --json bench/results/privacy_scaling.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time
from typing import Any

import numpy as np

from privrank.data.splits import HoldoutSplit, split
from privrank.data.synthetic import SyntheticConfig, generate
from privrank.metrics import EvaluationConfig, bootstrap_cis, evaluate
from privrank.models import EASE, FitOptions, MostPopular, Recommender
from privrank.privacy.spec import PrivacySpec

#: DP-EASE candidates (Gram norm C, ``private.denoising_ridge``) tried on the validation split.
CANDIDATES = ((5.0, False), (5.0, True), (20.0, True))
#: EASE's λ tried on the validation split (non-private; DP-EASE uses the selected one).
REGULARIZATIONS = (100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--per-user", type=float, default=20.0)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--count-norm", type=float, default=math.sqrt(50))
    parser.add_argument("--count-share", type=float, default=0.3)
    parser.add_argument("--signal-ratio", type=float, default=0.8)
    parser.add_argument("--eval-users", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    for name in ("items", "eval_users", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if min(args.users) < 100 or args.per_user < 2:
        parser.error("--users must be ≥ 100 and --per-user ≥ 2")

    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}; {args.items} items, {args.per_user:g} rows/user",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for n_users in args.users:
        rows.extend(run_scale(n_users, args))
        if args.json:  # after every scale, so a long run leaves its finished part behind
            with open(args.json, "w") as handle:
                json.dump({"args": vars(args), "rows": rows}, handle, indent=2)


def sample(test, n_users: int, seed: int):
    """``test`` restricted to a uniform sample of ``n_users`` of its users (all if fewer)."""
    users = np.unique(test.users())
    if users.size <= n_users:
        return test, users.size
    keep = np.random.default_rng(seed).choice(users, n_users, replace=False)
    return test.take(np.flatnonzero(np.isin(test.users(), keep))), n_users


def run_scale(n_users: int, args) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    config = SyntheticConfig(
        n_users=n_users,
        n_items=args.items,
        n_interactions=int(n_users * args.per_user),
        n_clusters=20,
        rating_levels=None,
        seed=0,
    )
    data = generate(config)
    parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
    train = parts.train
    test, n_eval = sample(parts.test, args.eval_users, 0)
    # Selection on validation data carved from train (a further 80/20 holdout, seed 1), never
    # on test: which DP-EASE candidate (Gram norm, denoising mode) to use at each ε.
    inner = split(train, HoldoutSplit(fraction=0.2, seed=1))
    inner_test, _ = sample(inner.test, args.eval_users, 1)
    prep_s = time.perf_counter() - t0
    print(
        f"\n{n_users:,} users: {len(train):,} train / {len(parts.test):,} test rows; evaluated "
        f"on {n_eval:,} test users; data + splits {prep_s:.0f} s, load "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    eval_config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg",), beyond_accuracy=False)

    # The non-private EASE's λ is selected on the same validation split (so that the
    # retention is measured against a tuned baseline); DP-EASE starts from the same λ.
    lambdas = []
    for regularization in REGULARIZATIONS:
        model = EASE(regularization=regularization).fit(
            inner.train, FitOptions(threads=args.threads)
        )
        value = evaluate(model.score, inner.train, inner_test, eval_config).means["ndcg@10"]
        lambdas.append({"regularization": regularization, "validation_ndcg@10": value})
    chosen_lambda = max(lambdas, key=lambda t: t["validation_ndcg@10"])["regularization"]
    print(f"    selection of EASE's λ: {lambdas} → {chosen_lambda:g}", flush=True)

    def dp_ease(gram_norm: float, ridge: bool) -> EASE:
        return EASE(
            regularization=chosen_lambda,
            private={
                "count_share": args.count_share,
                "count_norm": args.count_norm,
                "gram_norm": gram_norm,
                "signal_ratio": args.signal_ratio,
                "denoising_ridge": ridge,
            },
        )

    def select(epsilon: float) -> tuple[float, bool, list[dict[str, Any]]]:
        tried = []
        for gram_norm, ridge in CANDIDATES:
            spec = PrivacySpec(epsilon=epsilon, max_interactions_per_user=args.items, noise_seed=1)
            model = dp_ease(gram_norm, ridge).fit(
                inner.train, FitOptions(threads=args.threads, privacy=spec)
            )
            value = evaluate(model.score, inner.train, inner_test, eval_config).means["ndcg@10"]
            tried.append({"gram_norm": gram_norm, "ridge": ridge, "validation_ndcg@10": value})
            print(f"    selection ε={epsilon:g}: {tried[-1]}", flush=True)
        best = max(tried, key=lambda t: t["validation_ndcg@10"])
        return best["gram_norm"], best["ridge"], tried

    def measure(name: str, epsilon: float | None, model: Recommender, options: FitOptions):
        started = time.perf_counter()
        model.fit(train, options)
        fit_s = time.perf_counter() - started
        values = evaluate(model.score, train, test, eval_config).per_user["ndcg@10"]
        ci = bootstrap_cis({"ndcg": values})["ndcg"]
        row = {
            "users": n_users,
            "model": name,
            "epsilon": epsilon,
            "ndcg@10": ci.estimate,
            "ci": [ci.low, ci.high],
            "fit_s": fit_s,
            "eval_users": int(n_eval),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if model.privacy_guarantee_ is not None:
            row["guarantee"] = model.privacy_guarantee_.to_dict()
            if isinstance(model, EASE):
                items = getattr(model, "items_", None)
                row["gram_items"] = model.n_items_ if items is None else int(items.size)
        return row

    out = []
    threads = FitOptions(threads=args.threads)
    plain = measure("EASE", None, EASE(regularization=chosen_lambda), threads)
    plain["regularization"] = chosen_lambda
    plain["tried"] = lambdas
    out.append(plain)
    print(f"  EASE           ε=∞  NDCG@10 {plain['ndcg@10']:.4f}  fit {plain['fit_s']:.1f} s")
    for epsilon in args.epsilons:
        for name in ("DP-MostPopular", "DP-EASE"):
            selected: dict[str, Any] = {}
            if name == "DP-EASE":
                gram_norm, ridge, tried = select(epsilon)
                selected = {"gram_norm": gram_norm, "denoising_ridge": ridge, "tried": tried}
                model: Recommender = dp_ease(gram_norm, ridge)
                bound = args.items
            else:
                model, bound = MostPopular(), 100
            spec = PrivacySpec(epsilon=epsilon, max_interactions_per_user=bound, noise_seed=0)
            row = measure(name, epsilon, model, FitOptions(threads=args.threads, privacy=spec))
            row["retention"] = row["ndcg@10"] / plain["ndcg@10"]
            row.update(selected)
            out.append(row)
            print(
                f"  {name:<15}ε={epsilon:g}  NDCG@10 {row['ndcg@10']:.4f} "
                f"[{row['ci'][0]:.4f}, {row['ci'][1]:.4f}]  of EASE {row['retention']:.1%}  "
                f"fit {row['fit_s']:.1f} s  items in Gram {row.get('gram_items', '-')}  "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB  {selected.get('gram_norm', '')} "
                f"{selected.get('denoising_ridge', '')}",
                flush=True,
            )
    return out


if __name__ == "__main__":
    main()
