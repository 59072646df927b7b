"""Privacy-utility benchmark: NDCG@10 of the private closed-form models at ε ∈ {0.5 … 8}.

ML-100K under the design's holdout protocol (every rating an interaction; per-user random
80/20 holdout, seed 0; full ranking over all items, training items excluded), or with
``--protocol beauty-loo`` Amazon Beauty leave-one-out (fit on train; each test user's history
is train + validation, folded in and excluded from the ranking). In one run, on
one split: the non-private MostPopular, ItemKNN and EASE, then at each ε the private fits
(``FitOptions(privacy=PrivacySpec(...))``) of MostPopular (DP-MostPopular), EASE (DP-EASE)
and ItemKNN (DP-ItemKNN), each with user-level (ε, δ = 1/(10·n_users)) differential privacy
and a contribution bound of ``--bound`` interactions per user (most recent). Every number is
NDCG@10 with a 95% percentile bootstrap CI over users (1000 resamples); the private rows also
print their ratio to the best non-private NDCG@10. Noise is seeded (``--noise-seed``) so the
table can be reproduced; ``--repeats`` averages several noise draws.

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_privacy_utility.py
    ... --epsilons 1 8 --bound 50 --repeats 3 --json out.json
    ... --protocol beauty-loo --bound 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from privrank.data.catalog import load
from privrank.data.splits import HoldoutSplit, split
from privrank.metrics import EvaluationConfig, bootstrap_cis, evaluate
from privrank.models import EASE, FitOptions, ItemKNN, MostPopular, Query
from privrank.privacy.spec import PrivacySpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--protocol", choices=["ml100k-holdout", "beauty-loo"], default="ml100k-holdout"
    )
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1, 2, 4, 8])
    parser.add_argument("--bound", type=int, default=50, help="max interactions per user")
    parser.add_argument("--ease-regularization", type=float, default=300.0)
    parser.add_argument("--knn-neighbors", type=int, default=100)
    parser.add_argument("--knn-shrinkage", type=float, default=10.0)
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="noise draws per private model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    if args.protocol == "ml100k-holdout":
        data = load("ml-100k").interactions
        parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
        train, history, test = parts.train, parts.train, parts.test
    else:  # the design's Beauty leave-one-out: fit on train, score train + validation
        from privrank.metrics.protocols import prepare

        prepared = prepare("beauty-loo")
        train, history, test = prepared.train, prepared.history, prepared.test
    indptr, items = history.sequences()
    histories = Query(indptr=indptr, items=items.astype(np.int64))
    config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg",), beyond_accuracy=False)
    print(
        f"{args.protocol}: {train.n_users} users, {train.n_items} items, {len(train)} train / "
        f"{len(history)} history / {len(test)} test rows; python {platform.python_version()}"
    )

    def models():
        return {
            "MostPopular": MostPopular(),
            "ItemKNN": ItemKNN(neighbors=args.knn_neighbors, shrinkage=args.knn_shrinkage),
            "EASE": EASE(
                regularization=args.ease_regularization,
            ),
        }

    def run(model, options) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        model.fit(train, options)
        fit_s = time.perf_counter() - started
        # Every test user is scored by folding in their history (for ML-100K: exactly their
        # training-time scores); the history's items are excluded from the ranking.
        result = evaluate(lambda users: model.score(histories.take(users)), history, test, config)
        return result.per_user["ndcg@10"], fit_s

    rows = []
    best = 0.0
    print(f"\n{'model':<16}{'ε':>6}  {'NDCG@10':>8}  {'95% CI':>17}  {'of best':>7}  {'fit s':>6}")
    for name, model in models().items():
        values, fit_s = run(model, FitOptions(threads=args.threads))
        ci = bootstrap_cis({"ndcg": values})["ndcg"]
        best = max(best, ci.estimate)
        rows.append(
            {
                "model": name,
                "epsilon": None,
                "ndcg@10": ci.estimate,
                "ci": [ci.low, ci.high],
                "fit_s": fit_s,
            }
        )
        print(
            f"{name:<16}{'∞':>6}  {ci.estimate:8.4f}  [{ci.low:.4f}, {ci.high:.4f}]  "
            f"{'':>7}  {fit_s:6.2f}"
        )
    for epsilon in args.epsilons:
        for name in models():
            per_user, fits = [], []
            for repeat in range(args.repeats):
                spec = PrivacySpec(
                    epsilon=epsilon,
                    max_interactions_per_user=args.bound,
                    noise_seed=args.noise_seed + repeat,
                )
                model = models()[name]
                values, fit_s = run(model, FitOptions(threads=args.threads, privacy=spec))
                per_user.append(values)
                fits.append(fit_s)
            values = np.mean(per_user, axis=0)
            ci = bootstrap_cis({"ndcg": values})["ndcg"]
            guarantee = model.privacy_guarantee_
            rows.append(
                {
                    "model": f"DP-{name}",
                    "epsilon": epsilon,
                    "ndcg@10": ci.estimate,
                    "ci": [ci.low, ci.high],
                    "of_best": ci.estimate / best,
                    "fit_s": float(np.mean(fits)),
                    "repeats": args.repeats,
                    "guarantee": guarantee.to_dict(),
                }
            )
            print(
                f"{'DP-' + name:<16}{epsilon:6g}  {ci.estimate:8.4f}  "
                f"[{ci.low:.4f}, {ci.high:.4f}]  {ci.estimate / best:7.1%}  "
                f"{np.mean(fits):6.2f}   sigma={guarantee.noise_std:.1f}"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
