"""Speed of privrank's iALS and EASE against their peers, measured in the same run.

1. **iALS vs implicit's ALS, time per epoch.** One synthetic data set
   (:func:`privrank.data.synthetic.generate`; the default shape is MovieLens-20M's: 138,493
   users, 26,744 items, 20,000,263 interactions) is fitted by :class:`privrank.models.IALS`
   (``solver="cg"``, 3 conjugate-gradient steps per row, as implicit) and by
   :class:`privrank.models.ImplicitALS` (implicit's CPU ALS, CG solver, 3 steps) at each
   factor count, with the same thread count, alternating ours/theirs for ``--repeats`` rounds.
   Epoch times come from the fit's progress callbacks. *Steady epoch* is the median time of
   the epochs after the first (the first also holds each library's set-up, e.g. the
   transposed matrix) — for privrank also excluding the last epoch, whose user pass is an
   exact Cholesky solve (it makes fold-in reproduce the training factors; implicit has no
   such pass). The total fit time of the same fits is reported too. The ratio is
   privrank / implicit (< 1: privrank is faster).
2. **Quality on ML-100K** (the design's holdout protocol: per-user random 80/20, seed 0; full
   ranking, training items excluded; NDCG@10 and Recall@20 by
   :func:`privrank.metrics.evaluate`). Both models get the same small tuning budget: each
   candidate config is fitted on the training part minus a per-user 20 % validation holdout
   (seed 1) and scored there by NDCG@10; the best config of each is refitted on the whole
   training part and evaluated on the test part. Needs ``PRIVRANK_DATA_DIR``.
3. **Half-steps alone** (``--jobs kernels``): privrank's CG kernel against implicit's
   ``least_squares_cg`` on the same matrix and factors, alternating many short timed units
   (less sensitive to load swings on a shared machine than whole fits).
4. **EASE vs a bare inverse.** A synthetic data set with 12,000 items; the EASE fit
   (:class:`privrank.models.EASE`, float32: Gram matrix, Cholesky, inverse) against a bare
   ``torch.linalg.inv`` of the same regularised Gram matrix (float32, already dense in
   memory: the arithmetic floor), alternating, with the same torch thread count.

Every section prints the load average (1, 5, 15 min) before and after: on a shared machine
the figures are only comparable within one run.

Usage::

    .venv/bin/python bench/bench_models.py                 # full size (about 30 min, 2 cores)
    .venv/bin/python bench/bench_models.py --quick         # small data, one round
    .venv/bin/python bench/bench_models.py --jobs ials --factors 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from privrank.data.interactions import Interactions
from privrank.data.synthetic import SyntheticConfig, generate
from privrank.models import EASE, IALS, FitOptions, ImplicitALS
from privrank.models._config import FitProgress


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _timed_fit(model: Any, data: Interactions, threads: int, seed: int = 0) -> dict[str, Any]:
    stamps: list[float] = []

    def progress(event: FitProgress) -> None:
        stamps.append(event.elapsed_s)

    started = time.perf_counter()
    model.fit(data, FitOptions(seed=seed, threads=threads, progress=progress))
    total = time.perf_counter() - started
    epochs = list(np.diff([0.0, *stamps]))
    return {"total_s": total, "epochs_s": epochs}


def _steady(epochs: list[float], drop_last: bool) -> float:
    middle = epochs[1:-1] if drop_last else epochs[1:]
    return statistics.median(middle or epochs)


def bench_ials(args: argparse.Namespace) -> dict[str, Any]:
    config = SyntheticConfig(
        n_users=args.users,
        n_items=args.items,
        n_interactions=args.interactions,
        seed=args.seed,
    )
    started = time.perf_counter()
    data = generate(config)
    print(
        f"iALS data: {data.n_users:,} users, {data.n_items:,} items, {len(data):,} "
        f"interactions (generated in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    # Warm-up on a small slice: compiles privrank's kernels (cached on disk after the first
    # run) and loads implicit, so neither is timed.
    small = data.take(np.arange(min(len(data), 50_000)))
    IALS(factors=8, epochs=2, solver="cg").fit(small, FitOptions(threads=args.threads))
    ImplicitALS(factors=8, iterations=2).fit(small, FitOptions(threads=args.threads))
    results = []
    for factors in args.factors:
        ours_runs, theirs_runs = [], []
        load_before = _load()
        for round_ in range(args.repeats):
            ours = IALS(factors=factors, epochs=args.epochs, solver="cg", cg_steps=3)
            theirs = ImplicitALS(factors=factors, iterations=args.epochs)
            pair = [("privrank", ours, ours_runs), ("implicit", theirs, theirs_runs)]
            for name, model, runs in pair if round_ % 2 == 0 else pair[::-1]:
                run = _timed_fit(model, data, args.threads)
                run["steady_s"] = _steady(run["epochs_s"], drop_last=name == "privrank")
                runs.append(run)
                epochs = " ".join(f"{e:.2f}" for e in run["epochs_s"])
                print(
                    f"  d={factors} round {round_ + 1} {name:8s}: steady epoch "
                    f"{run['steady_s']:.2f} s, total {run['total_s']:.1f} s (epochs: {epochs})",
                    flush=True,
                )
                del model
        ours_steady = statistics.median(r["steady_s"] for r in ours_runs)
        theirs_steady = statistics.median(r["steady_s"] for r in theirs_runs)
        ours_total = statistics.median(r["total_s"] for r in ours_runs)
        theirs_total = statistics.median(r["total_s"] for r in theirs_runs)
        ours_exact = statistics.median(r["epochs_s"][-1] for r in ours_runs)
        row = {
            "factors": factors,
            "privrank_steady_epoch_s": ours_steady,
            "implicit_steady_epoch_s": theirs_steady,
            "steady_ratio": ours_steady / theirs_steady,
            "privrank_last_epoch_with_exact_user_pass_s": ours_exact,
            "privrank_total_s": ours_total,
            "implicit_total_s": theirs_total,
            "total_ratio": ours_total / theirs_total,
            "load_before": load_before,
            "load_after": _load(),
            "runs": {"privrank": ours_runs, "implicit": theirs_runs},
        }
        print(
            f"d={factors}: steady epoch privrank {ours_steady:.2f} s vs implicit "
            f"{theirs_steady:.2f} s -> ratio {row['steady_ratio']:.2f}; total fit "
            f"({args.epochs} epochs) {ours_total:.1f} s vs {theirs_total:.1f} s -> ratio "
            f"{row['total_ratio']:.2f}; privrank's last epoch (exact user pass) "
            f"{ours_exact:.2f} s; load {load_before} -> {row['load_after']}",
            flush=True,
        )
        results.append(row)
    return {
        "data": config.model_dump(mode="json"),
        "epochs": args.epochs,
        "threads": args.threads,
        "by_factors": results,
    }


def bench_kernels(args: argparse.Namespace) -> dict[str, Any]:
    """Half-steps alone, many short alternations: privrank's CG kernel against implicit's
    ``least_squares_cg`` (the routine its fit calls), same matrix, same factors, 3 CG steps,
    same threads, BLAS single-threaded for both. Less sensitive to load swings than whole
    fits because each timed unit is short and the two alternate."""
    import implicit.cpu._als as implicit_als
    import threadpoolctl

    from privrank.models._als_solvers import gramian, solve_cg

    config = SyntheticConfig(
        n_users=args.users, n_items=args.items, n_interactions=args.interactions, seed=args.seed
    )
    data = generate(config)
    by_user = data.to_csr().astype(np.float32)
    by_user.data[:] = 1.0
    by_item = by_user.T.tocsr()
    results = []
    with threadpoolctl.threadpool_limits(1, "blas"):
        for factors in args.factors:
            rng = np.random.default_rng(0)
            scale = 0.1 / np.sqrt(factors)
            users = (rng.standard_normal((data.n_users, factors)) * scale).astype(np.float32)
            items = (rng.standard_normal((data.n_items, factors)) * scale).astype(np.float32)
            reg_users = np.full(data.n_users, 0.1, dtype=np.float32)
            reg_items = np.full(data.n_items, 0.1, dtype=np.float32)
            times: dict[str, list[float]] = {}
            load_before = _load()
            halves = [
                ("items", by_item, users, items, reg_items, False),
                ("users", by_user, items, users, reg_users, True),
            ]
            # Round 0 is a warm-up (kernel compilation or cache load, first touches): untimed.
            for round_ in range(-1, args.kernel_repeats):
                for side, matrix, other, current, reg, with_loss in halves:
                    jobs = ["privrank", "implicit", "implicit-alpha5"]
                    for job in jobs if round_ % 2 == 0 else jobs[::-1]:
                        started = time.perf_counter()
                        if job == "privrank":
                            gram = gramian(other)
                            solve_cg(
                                matrix, other, gram, reg, 1.0, current, 3, args.threads, with_loss
                            )
                        else:
                            # Confidence c = alpha on observed pairs; with c = 1 (alpha = 1,
                            # the peer's default) implicit's CG products skip nothing but
                            # scale the observed terms by c - 1 = 0.
                            confidences = matrix if job == "implicit" else matrix * 5.0
                            start = current.copy()
                            implicit_als.least_squares_cg(
                                confidences,
                                start,
                                other,
                                0.1,
                                num_threads=args.threads,
                                cg_steps=3,
                            )
                        times.setdefault(f"{job}-{side}", []).append(time.perf_counter() - started)
            medians = {key: statistics.median(values) for key, values in times.items()}
            ours = medians["privrank-items"] + medians["privrank-users"]
            theirs = medians["implicit-items"] + medians["implicit-users"]
            theirs5 = medians["implicit-alpha5-items"] + medians["implicit-alpha5-users"]
            row = {
                "factors": factors,
                "median_s": medians,
                "privrank_epoch_s": ours,
                "implicit_epoch_s": theirs,
                "ratio": ours / theirs,
                "implicit_alpha5_epoch_s": theirs5,
                "ratio_alpha5": ours / theirs5,
                "per_round_ratio": [
                    (times["privrank-items"][k] + times["privrank-users"][k])
                    / (times["implicit-items"][k] + times["implicit-users"][k])
                    for k in range(args.kernel_repeats)
                ],
                "load_before": load_before,
                "load_after": _load(),
            }
            print(
                f"half-steps d={factors}: privrank items {medians['privrank-items']:.2f} s + "
                f"users (with loss) {medians['privrank-users']:.2f} s = {ours:.2f} s; implicit "
                f"{medians['implicit-items']:.2f} + {medians['implicit-users']:.2f} = "
                f"{theirs:.2f} s -> ratio {row['ratio']:.2f} (per round: "
                + " ".join(f"{r:.2f}" for r in row["per_round_ratio"])
                + f"); implicit alpha=5 {theirs5:.2f} s -> ratio {row['ratio_alpha5']:.2f}; "
                f"load {load_before} -> {row['load_after']}",
                flush=True,
            )
            results.append(row)
    return {"data": config.model_dump(mode="json"), "by_factors": results}


def _ndcg(model: Any, train: Interactions, test: Interactions) -> dict[str, float]:
    from privrank.metrics import evaluate

    result = evaluate(lambda users: model.score(users), train, test)
    return {"ndcg@10": result.means["ndcg@10"], "recall@20": result.means["recall@20"]}


# The tuning budget: six candidates each. privrank's iALS around its defaults (λ, α0);
# implicit's ALS over its regularisation and confidence α. 64 factors, 16/15 epochs.
_IALS_GRID = [
    {"regularization": reg, "unobserved_weight": a0}
    for reg in (0.01, 0.03, 0.1)
    for a0 in (0.1, 0.3)
]
_IMPLICIT_GRID = [
    {"regularization": reg, "alpha": alpha} for reg in (0.01, 0.1, 1.0) for alpha in (1.0, 5.0)
]


def bench_quality(args: argparse.Namespace) -> dict[str, Any]:
    from privrank.data.catalog import load
    from privrank.data.splits import HoldoutSplit, split

    data = load("ml-100k").interactions
    parts = split(data, HoldoutSplit(fraction=0.2, seed=0))
    inner = split(parts.train, HoldoutSplit(fraction=0.2, seed=1))
    candidates = {
        "privrank-ials-cg": (
            lambda **kw: IALS(factors=64, solver="cg", cg_steps=3, **kw),
            _IALS_GRID,
        ),
        "implicit-als": (lambda **kw: ImplicitALS(factors=64, **kw), _IMPLICIT_GRID),
    }
    out: dict[str, Any] = {"load_before": _load()}
    for name, (factory, grid) in candidates.items():
        scored = []
        for params in grid:
            model = factory(**params).fit(inner.train, FitOptions(seed=0, threads=args.threads))
            scored.append((_ndcg(model, inner.train, inner.test)["ndcg@10"], params))
        best_validation, best = max(scored, key=lambda pair: pair[0])
        model = factory(**best).fit(parts.train, FitOptions(seed=0, threads=args.threads))
        test = _ndcg(model, parts.train, parts.test)
        out[name] = {"best": best, "validation_ndcg@10": best_validation, **test}
        print(
            f"ML-100K {name}: best {best} (validation NDCG@10 {best_validation:.4f}); "
            f"test NDCG@10 {test['ndcg@10']:.4f}, Recall@20 {test['recall@20']:.4f}",
            flush=True,
        )
    out["load_after"] = _load()
    return out


def bench_ease(args: argparse.Namespace) -> dict[str, Any]:
    config = SyntheticConfig(
        n_users=args.ease_users,
        n_items=args.ease_items,
        n_interactions=args.ease_interactions,
        seed=args.seed,
    )
    data = generate(config)
    regularization = 300.0
    matrix = data.to_csr().astype(np.float32)
    matrix.data[:] = 1.0
    torch.set_num_threads(args.threads)
    gram = torch.from_numpy((matrix.T @ matrix).toarray())
    gram.diagonal().add_(regularization)
    print(
        f"EASE data: {data.n_users:,} users, {data.n_items:,} items, {len(data):,} "
        f"interactions; load {_load()}",
        flush=True,
    )
    ease_times, inverse_times = [], []
    load_before = _load()
    for round_ in range(args.repeats):
        order = ["ease", "inverse"] if round_ % 2 == 0 else ["inverse", "ease"]
        for job in order:
            started = time.perf_counter()
            if job == "ease":
                EASE(regularization=regularization).fit(data, FitOptions(threads=args.threads))
                ease_times.append(time.perf_counter() - started)
            else:
                inverse = torch.linalg.inv(gram)
                inverse_times.append(time.perf_counter() - started)
                del inverse
            print(f"  round {round_ + 1} {job}: {time.perf_counter() - started:.2f} s", flush=True)
    ease_s, inverse_s = statistics.median(ease_times), statistics.median(inverse_times)
    row = {
        "data": config.model_dump(mode="json"),
        "ease_fit_s": ease_s,
        "bare_inverse_s": inverse_s,
        "ratio": ease_s / inverse_s,
        "runs": {"ease": ease_times, "inverse": inverse_times},
        "load_before": load_before,
        "load_after": _load(),
    }
    print(
        f"EASE fit {ease_s:.2f} s vs bare torch.linalg.inv {inverse_s:.2f} s -> ratio "
        f"{row['ratio']:.2f} (target <= 1.5); load {load_before} -> {row['load_after']}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, one round")
    parser.add_argument(
        "--jobs", default="ials,kernels,quality,ease", help="comma-separated job names"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=138_493)
    parser.add_argument("--items", type=int, default=26_744)
    parser.add_argument("--interactions", type=int, default=20_000_263)
    parser.add_argument("--ease-users", type=int, default=100_000)
    parser.add_argument("--ease-items", type=int, default=12_000)
    parser.add_argument("--ease-interactions", type=int, default=5_000_000)
    parser.add_argument("--kernel-repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write all results to this file")
    args = parser.parse_args()
    if args.quick:
        args.users, args.items, args.interactions = 5_000, 2_000, 500_000
        args.ease_users, args.ease_items, args.ease_interactions = 5_000, 2_000, 200_000
        args.repeats, args.epochs, args.kernel_repeats = 1, 4, 2
    jobs = set(args.jobs.split(","))
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "load_start": _load(),
    }
    print(f"{report['date']} on {os.cpu_count()} CPUs; load {report['load_start']}", flush=True)
    if "ials" in jobs:
        report["ials"] = bench_ials(args)
    if "kernels" in jobs:
        report["kernels"] = bench_kernels(args)
    if "quality" in jobs:
        report["quality"] = bench_quality(args)
    if "ease" in jobs:
        report["ease"] = bench_ease(args)
    report["load_end"] = _load()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
