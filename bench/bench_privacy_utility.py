"""Privacy-utility benchmark: NDCG@10 and HR@10 of the private closed-form models at ε ∈ {0.5 … 8}.

ML-100K under the design's holdout protocol (every rating an interaction; per-user random
80/20 holdout, seed 0; full ranking over all items, training items excluded), or with
``--protocol beauty-loo`` Amazon Beauty leave-one-out (fit on train; each test user's history
is train + validation, folded in and excluded from the ranking).

In one run, on one split: the non-private MostPopular, ItemKNN and EASE, then at each ε the
private fits (``FitOptions(privacy=PrivacySpec(...))``) of MostPopular (DP-MostPopular), ItemKNN
(DP-ItemKNN), EASE (DP-EASE) and, when the model supports it, iALS (DP-iALS, default settings),
each with user-level (ε, δ = 1/(10·n_users)) differential privacy.

**Hyper-parameters are selected on validation data carved from the training data, never on
test.** ML-100K: a further per-user 80/20 holdout of the training part (seed 1); models are
fitted on its 80% and scored on its 20% for selection, then refitted on the whole training part
with the selected settings for the test numbers. Beauty: the protocol's validation item
(fit on train, history = train, relevant = the validation item). Selection is a coordinate
search per model and per ε over the private settings (contribution bound, norm bounds, budget
share, item-selection ratio, denoising, regularisation, popularity prior), one noise draw per
setting (noise seeds 1000+); the test numbers use ``--repeats`` fresh draws (seeds 0, 1, …),
averaged per user, with a 95% percentile bootstrap CI over users (1,000 resamples). Choosing
settings on the private training data is itself not accounted in ε (as is usual in the
DP-recommender literature).

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_privacy_utility.py \\
        --repeats 3 --json bench/results/privacy_utility_ml100k.json \\
        --plot bench/results/privacy_utility_ml100k.png
    ... --protocol beauty-loo --quick --passes 1 --selection-users 4000 \\
        --models DP-MostPopular DP-ItemKNN DP-EASE --json ... --plot ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from privrank.data.catalog import load
from privrank.data.interactions import Interactions
from privrank.data.splits import HoldoutSplit, split
from privrank.metrics import EvaluationConfig, bootstrap_cis, evaluate
from privrank.models import EASE, IALS, FitOptions, ItemKNN, MostPopular, Query, Recommender
from privrank.privacy.spec import PrivacySpec

METRICS = ("ndcg@10", "hit_rate@10")


@dataclass
class Part:
    """Fit on ``train``; score ``history`` (folded in, masked); ``test`` is relevant."""

    train: Interactions
    history: Interactions
    test: Interactions

    def __post_init__(self) -> None:
        indptr, items = self.history.sequences()
        self.query = Query(indptr=indptr, items=items.astype(np.int64))


def sample_users(part: Part, n_users: int | None) -> Part:
    """The same part with the relevant rows of a uniform sample of users (seed 0)."""
    users = np.unique(part.test.users())
    if n_users is None or users.size <= n_users:
        return part
    keep = np.random.default_rng(0).choice(users, n_users, replace=False)
    return Part(
        part.train, part.history, part.test.take(np.flatnonzero(np.isin(part.test.users(), keep)))
    )


def parts(protocol: str) -> tuple[Part, Part]:
    """(selection part, test part)."""
    if protocol == "ml100k-holdout":
        data = load("ml-100k").interactions
        outer = split(data, HoldoutSplit(fraction=0.2, seed=0))
        inner = split(outer.train, HoldoutSplit(fraction=0.2, seed=1))
        test = Part(outer.train, outer.train, outer.test)
        return Part(inner.train, inner.train, inner.test), test
    from privrank.workflow.protocols import prepare

    prepared = prepare("beauty-loo")
    selection = Part(prepared.train, prepared.train, prepared.validation)
    return selection, Part(prepared.train, prepared.history, prepared.test)


def per_user(model: Recommender, part: Part) -> dict[str, np.ndarray]:
    config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg", "hit_rate"), beyond_accuracy=False)
    result = evaluate(
        lambda users: model.score(part.query.take(users)), part.history, part.test, config
    )
    return {name: result.per_user[name] for name in METRICS}


# -------------------------------------------------------------------- search spaces
# Each DP model: a builder (settings → (model, spec kwargs)), a start point and, per setting, the
# values the coordinate search tries. "bound" is the spec's cap on rows per user.
def dp_popular(s: dict[str, Any]) -> tuple[Recommender, dict[str, Any]]:
    return MostPopular(), {"max_interactions_per_user": s["bound"], "selection": s["selection"]}


def _gram_settings(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "count_share": s["count_share"],
        "count_norm": s["count_norm"],
        "gram_norm": s["gram_norm"],
        "signal_ratio": s["signal_ratio"],
        "popularity_weight": s["prior"],
    }


def dp_ease(s: dict[str, Any]) -> tuple[Recommender, dict[str, Any]]:
    model = EASE(
        regularization=s["regularization"],
        private={"denoising": s["denoising"], **_gram_settings(s)},
    )
    return model, {"max_interactions_per_user": s["bound"]}


def dp_itemknn(s: dict[str, Any]) -> tuple[Recommender, dict[str, Any]]:
    model = ItemKNN(
        neighbors=s["neighbors"],
        shrinkage=10.0,
        private={
            "threshold": s["threshold"],
            "shrinkage": s["knn_shrinkage"],
            **_gram_settings(s),
        },
    )
    return model, {"max_interactions_per_user": s["bound"]}


def dp_ials(s: dict[str, Any]) -> tuple[Recommender, dict[str, Any]]:
    return IALS(), {"max_interactions_per_user": s["bound"]}


GRAM_START = {
    "bound": 1000,
    "count_share": 0.3,
    "count_norm": math.sqrt(50),
    "gram_norm": 3.0,
    "signal_ratio": 0.8,
    "prior": 0.0,
}
SPACES: dict[str, tuple[Callable, dict[str, Any], dict[str, list[Any]]]] = {
    "DP-MostPopular": (
        dp_popular,
        {"bound": 50, "selection": "most_recent"},
        {"bound": [20, 50, 100, 200], "selection": ["most_recent", "uniform"]},
    ),
    "DP-ItemKNN": (
        dp_itemknn,
        {**GRAM_START, "neighbors": 100, "threshold": 0.0, "knn_shrinkage": 1.0},
        {
            "gram_norm": [2.0, 3.0, 5.0, 10.0, 20.0, 40.0],
            "signal_ratio": [0.3, 0.5, 0.8, 1.5, 3.0, 5.0],
            "threshold": [0.0, 1.0, 2.0],
            "knn_shrinkage": [0.0, 1.0, 10.0],
            "prior": [0.0, 0.03, 0.1, 0.3],
        },
    ),
    "DP-EASE": (
        dp_ease,
        {**GRAM_START, "regularization": 300.0, "denoising": 1.0},
        {
            "gram_norm": [2.0, 3.0, 5.0, 10.0, 20.0, 40.0],
            "signal_ratio": [0.3, 0.5, 0.8, 1.5, 3.0, 5.0],
            "regularization": [10.0, 30.0, 100.0, 300.0, 1000.0],
            "denoising": [0.0, 0.5, 1.0, 1.5],
            "count_share": [0.15, 0.3, 0.5],
            "count_norm": [math.sqrt(20), math.sqrt(50), math.sqrt(100)],
            "prior": [0.0, 0.03, 0.1, 0.3],
        },
    ),
    "DP-iALS": (dp_ials, {"bound": 50}, {"bound": [20, 50, 100]}),
}
QUICK = {  # --quick: fewer values (Beauty: each fit and evaluation is ~50x dearer)
    "DP-MostPopular": {"bound": [10, 20, 50], "selection": ["most_recent"]},
    "DP-ItemKNN": {
        "gram_norm": [1.0, 2.0, 5.0, 10.0],
        "signal_ratio": [0.5, 1.5],
        "count_share": [0.3, 0.5],
        "count_norm": [math.sqrt(10), math.sqrt(50)],
        "prior": [0.0, 0.3, 3.0, 30.0],
    },
    "DP-EASE": {
        "gram_norm": [1.0, 2.0, 5.0, 10.0],
        "signal_ratio": [0.5, 1.5],
        "regularization": [30.0, 100.0, 300.0],
        "count_share": [0.3, 0.5],
        "count_norm": [math.sqrt(10), math.sqrt(50)],
        "prior": [0.0, 0.3, 3.0, 30.0],
    },
    "DP-iALS": {"bound": [20]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--protocol", choices=["ml100k-holdout", "beauty-loo"], default="ml100k-holdout"
    )
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1, 2, 4, 8])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["DP-MostPopular", "DP-ItemKNN", "DP-EASE", "DP-iALS"],
        choices=list(SPACES),
    )
    parser.add_argument("--ease-regularization", type=float, default=300.0)
    parser.add_argument("--knn-neighbors", type=int, default=100)
    parser.add_argument("--knn-shrinkage", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1, help="test noise draws per DP model")
    parser.add_argument("--passes", type=int, default=2, help="coordinate-search passes")
    parser.add_argument("--quick", action="store_true", help="smaller search spaces")
    parser.add_argument(
        "--selection-users",
        type=int,
        help="score the selection part on a uniform sample of this many users (default: all)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write the NDCG@10-vs-ε plot (PNG) here")
    args = parser.parse_args()
    if args.repeats < 1 or args.passes < 1:
        parser.error("--repeats and --passes must be ≥ 1")

    started_all = time.perf_counter()
    selection, test = parts(args.protocol)
    selection = sample_users(selection, args.selection_users)
    print(
        f"{args.protocol}: {test.train.n_users} users, {test.train.n_items} items; train "
        f"{len(test.train)} / test {len(test.test)} rows; selection: fit on "
        f"{len(selection.train)} rows, {len(selection.test)} relevant rows; python "
        f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    fit_options = FitOptions(threads=args.threads)

    rows: list[dict[str, Any]] = []
    best_name, best = "", 0.0
    print(f"\n{'model':<15}{'ε':>5}  {'NDCG@10 [95% CI]':>26}  {'HR@10':>7}  {'of best':>7}")
    plain = {
        "MostPopular": MostPopular(),
        "ItemKNN": ItemKNN(neighbors=args.knn_neighbors, shrinkage=args.knn_shrinkage),
        "EASE": EASE(regularization=args.ease_regularization),
    }
    for name, model in plain.items():
        t0 = time.perf_counter()
        model.fit(test.train, fit_options)
        values = per_user(model, test)
        row = summarise(name, None, values, time.perf_counter() - t0)
        if row["ndcg@10"] > best:
            best_name, best = name, row["ndcg@10"]
        rows.append(row)
        print_row(row, None)

    for epsilon in args.epsilons:
        for name in args.models:
            if name == "DP-iALS" and not getattr(IALS, "supports_privacy", False):
                continue
            builder, start, space = SPACES[name]
            if args.quick and name in QUICK:
                space = QUICK[name]
            t0 = time.perf_counter()
            chosen, validation, tried = search(builder, start, space, epsilon, selection, args)
            search_s = time.perf_counter() - t0
            draws, fits = [], []
            model = None
            for repeat in range(args.repeats):
                # Always a fresh noise draw: reusing the selection fit (Beauty trains both on
                # the same data) would keep the draw that happened to score best on validation.
                model = fit_private(builder, chosen, epsilon, test.train, repeat, args)
                draws.append(per_user(model, test))
                fits.append(model)
            values = {k: np.mean([d[k] for d in draws], axis=0) for k in METRICS}
            row = summarise(name, epsilon, values, search_s)
            row.update(
                of_best=row["ndcg@10"] / best,
                settings=chosen,
                validation_ndcg10=validation,
                settings_tried=tried,
                repeats=args.repeats,
                guarantee=model.privacy_guarantee_.to_dict(),
            )
            if hasattr(model, "items_") and getattr(model, "items_", None) is not None:
                row["gram_items"] = int(model.items_.size)
            rows.append(row)
            print_row(row, best)
    total = time.perf_counter() - started_all
    print(f"\nbest non-private: {best_name} {best:.4f}; total {total:.0f} s")
    result = {
        "protocol": args.protocol,
        "args": vars(args),
        "best_non_private": {"model": best_name, "ndcg@10": best},
        "rows": rows,
        "machine": f"{platform.node()} python {platform.python_version()}, load "
        f"{os.getloadavg()[0]:.1f}",
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=float)
    if args.plot:
        plot(result, args.plot)


def fit_private(builder, settings, epsilon, train, seed, args) -> Recommender:
    model, spec_kwargs = builder(settings)
    spec = PrivacySpec(epsilon=epsilon, noise_seed=seed, **spec_kwargs)
    return model.fit(train, FitOptions(threads=args.threads, privacy=spec))


def search(builder, start, space, epsilon, selection: Part, args):
    """Coordinate search on the selection part: one setting at a time, the others fixed."""
    current = dict(start)
    cache: dict[str, float] = {}

    def score(settings: dict[str, Any]) -> float:
        key = json.dumps(settings, sort_keys=True)
        if key not in cache:
            model = fit_private(builder, settings, epsilon, selection.train, 1000, args)
            cache[key] = float(per_user(model, selection)["ndcg@10"].mean())
        return cache[key]

    best = score(current)
    for _ in range(args.passes):
        for setting, values in space.items():
            for value in values:
                trial = {**current, setting: value}
                value_score = score(trial)
                if value_score > best:
                    best, current = value_score, trial
    return current, best, len(cache)


def summarise(name, epsilon, values, seconds) -> dict[str, Any]:
    cis = bootstrap_cis({k: values[k] for k in METRICS})
    return {
        "model": name,
        "epsilon": epsilon,
        "ndcg@10": cis["ndcg@10"].estimate,
        "ndcg@10_ci": [cis["ndcg@10"].low, cis["ndcg@10"].high],
        "hr@10": cis["hit_rate@10"].estimate,
        "hr@10_ci": [cis["hit_rate@10"].low, cis["hit_rate@10"].high],
        "seconds": seconds,
    }


def print_row(row, best) -> None:
    eps = "∞" if row["epsilon"] is None else f"{row['epsilon']:g}"
    low, high = row["ndcg@10_ci"]
    share = "" if best is None else f"{row['ndcg@10'] / best:7.1%}"
    extra = ""
    if "settings" in row:
        extra = f"  {row['seconds']:.0f}s  {row['settings']}"
    print(
        f"{row['model']:<15}{eps:>5}  {row['ndcg@10']:.4f} [{low:.4f}, {high:.4f}]  "
        f"{row['hr@10']:7.4f}  {share:>7}{extra}",
        flush=True,
    )


def plot(result: dict[str, Any], path: str) -> None:
    """NDCG@10 vs ε (log scale), one line per DP model with its 95% CI band, the best
    non-private model as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    names = [r["model"] for r in result["rows"] if r["epsilon"] is not None]
    for name in dict.fromkeys(names):
        pts = sorted((r for r in result["rows"] if r["model"] == name), key=lambda r: r["epsilon"])
        eps = [r["epsilon"] for r in pts]
        ax.plot(eps, [r["ndcg@10"] for r in pts], marker="o", label=name)
        ax.fill_between(
            eps, [r["ndcg@10_ci"][0] for r in pts], [r["ndcg@10_ci"][1] for r in pts], alpha=0.15
        )
    top = result["best_non_private"]
    ax.axhline(top["ndcg@10"], linestyle="--", color="black", label=f"{top['model']} (non-private)")
    ax.axhline(0.8 * top["ndcg@10"], linestyle=":", color="grey", label="80% of it")
    ax.set_xscale("log", base=2)
    epsilons = sorted({r["epsilon"] for r in result["rows"] if r["epsilon"] is not None})
    ax.set_xticks(epsilons, [f"{e:g}" for e in epsilons])
    ax.set_xlabel("ε (user-level, δ = 1/(10·users))")
    ax.set_ylabel("NDCG@10 (test)")
    ax.set_title(f"Privacy-utility, {result['protocol']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"plot written to {path} ({os.path.getsize(path) / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
