"""Benchmark: our iALS vs implicit's ALS, each tuned with the same budget, on ML-100K holdout.

The protocol (``ml100k-holdout``): MovieLens 100K, every rating an interaction, per-user random
80/20 holdout with seed 0; full ranking over every item, training items excluded.

1. A validation split is carved out of the protocol's **training part only** (a per-user random
   holdout of ``train``, ``--validation-fraction``, ``--validation-seed``); the test part is not
   read until step 3.
2. Each model is tuned by :func:`privrank.tuning.tune` on that split (NDCG@10 on validation) with
   the **same budget**: the same number of trials (``--trials``), the same wall-clock cap
   (``--time-budget``), the same sampler (TPE) and seed, the same thread count. The search
   spaces are those of :mod:`privrank.tuning.search_spaces` (the same embedding sizes and epoch
   range for both, log-scale L2 and confidence weights, exact or CG solves). By default each
   study's first trial is the model's own default config (``--no-defaults``: search only).
3. Each model is refitted on the whole training part with its best config (seed ``--seed``) and
   evaluated once on test: NDCG@10 and Recall@20 with percentile-bootstrap 95% CIs over users,
   and a paired comparison (iALS − implicit ALS, per user: t-test, Wilcoxon, bootstrap CI of
   the mean difference). For reference, both models are also evaluated at their default configs.

Usage::

    .venv/bin/python bench/bench_tuning.py --trials 30 --time-budget 900 --out /tmp/tune.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from typing import Any

from privrank.metrics import bootstrap_cis, paired_comparison
from privrank.metrics.evaluate import evaluate
from privrank.models import FitOptions, create_model
from privrank.tuning import TuneConfig, carve_validation, tune
from privrank.workflow.protocols import prepare

OURS, PEER = "ials", "implicit-als"
METRICS = ("ndcg@10", "recall@20")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials per model")
    parser.add_argument("--time-budget", type=float, default=900.0, help="seconds per model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler and the fits")
    parser.add_argument("--threads", type=int, default=2, help="threads of every fit")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--validation-seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--no-defaults",
        action="store_true",
        help="do not make each model's default config its first trial (search only)",
    )
    parser.add_argument("--out", help="write the results as JSON here")
    return parser.parse_args()


def _test_run(name: str, params: dict[str, Any], prepared: Any, seed: int, threads: int):
    model = create_model(name, params)
    started = time.perf_counter()
    model.fit(prepared.train, FitOptions(seed=seed, threads=threads))
    fit_s = time.perf_counter() - started
    config = prepared.spec.evaluation_config(beyond_accuracy=False)
    result = evaluate(model.score, prepared.train, prepared.test, config)
    return result, fit_s


def main() -> None:
    args = _parse()
    load_before = os.getloadavg()
    prepared = prepare("ml100k-holdout")
    tune_train, validation = carve_validation(
        prepared.train, args.validation_fraction, args.validation_seed
    )
    print(
        f"protocol ml100k-holdout: train {len(prepared.train):,}, test {len(prepared.test):,}; "
        f"tuning on {len(tune_train):,} train / {len(validation):,} validation rows",
        flush=True,
    )
    tuning = TuneConfig(
        metric="ndcg@10",
        n_trials=args.trials,
        time_budget_s=args.time_budget,
        seed=args.seed,
        threads=args.threads,
        start_from_defaults=not args.no_defaults,
    )
    models: dict[str, dict[str, Any]] = {}
    results = {}
    for name in (OURS, PEER):
        print(f"tuning {name}: {args.trials} trials, {args.time_budget:.0f} s cap", flush=True)

        def show(record: Any, label: str = name) -> None:
            value = "-" if record.value is None else f"{record.value:.4f}"
            print(
                f"  {label} #{record.number} {record.state} {value} "
                f"{record.seconds:.1f}s {record.params} {record.note}",
                flush=True,
            )

        tuned = tune(name, tune_train, validation, tuning, on_trial=show)
        result, fit_s = _test_run(name, tuned.best_config, prepared, args.seed, args.threads)
        default, default_fit_s = _test_run(name, {}, prepared, args.seed, args.threads)
        results[name] = result
        cis = bootstrap_cis(
            {m: result.per_user[m] for m in METRICS}, n_resamples=args.resamples, seed=0
        )
        default_cis = bootstrap_cis(
            {m: default.per_user[m] for m in METRICS}, n_resamples=args.resamples, seed=0
        )
        states = [t.state for t in tuned.trials]
        models[name] = {
            "trials_run": len(tuned.trials),
            "trials_complete": states.count("COMPLETE"),
            "trials_pruned_by_time": states.count("PRUNED"),
            "trials_failed": states.count("FAIL"),
            "tuning_seconds": tuned.elapsed_s,
            "stop_reason": tuned.stop_reason,
            "best_trial": tuned.best_trial,
            "best_validation_ndcg@10": tuned.best_value,
            "best_config": tuned.best_config,
            "refit_seconds": fit_s,
            "test": {m: cis[m].to_dict() for m in METRICS},
            "default_config_test": {m: default_cis[m].to_dict() for m in METRICS},
            "default_fit_seconds": default_fit_s,
            "trials": [vars(t) for t in tuned.trials],
        }
        print(
            f"{name}: best validation NDCG@10 {tuned.best_value:.4f} (trial {tuned.best_trial}, "
            f"{len(tuned.trials)} trials in {tuned.elapsed_s:.0f} s); test NDCG@10 "
            f"{cis['ndcg@10'].estimate:.4f} [{cis['ndcg@10'].low:.4f}, {cis['ndcg@10'].high:.4f}]"
            f"; defaults: {default_cis['ndcg@10'].estimate:.4f}",
            flush=True,
        )
    comparisons = {
        m: paired_comparison(
            results[OURS].per_user[m], results[PEER].per_user[m], n_resamples=args.resamples
        ).to_dict()
        for m in METRICS
    }
    report = {
        "benchmark": "bench_tuning",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "args": vars(args),
        "tuning_config": tuning.model_dump(mode="json"),
        "split": {
            "train_rows": len(prepared.train),
            "test_rows": len(prepared.test),
            "tuning_train_rows": len(tune_train),
            "validation_rows": len(validation),
        },
        "models": models,
        "paired_ials_minus_implicit": comparisons,
    }
    _print_table(models, comparisons)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, default=str)
            handle.write("\n")


def _print_table(models: dict[str, Any], comparisons: dict[str, Any]) -> None:
    print()
    print(
        "| model | trials (complete) | tuning s | best val NDCG@10 | test NDCG@10 [95% CI] | "
        "test Recall@20 [95% CI] | defaults: test NDCG@10 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in models.items():
        n, r = row["test"]["ndcg@10"], row["test"]["recall@20"]
        d = row["default_config_test"]["ndcg@10"]
        print(
            f"| {name} | {row['trials_run']} ({row['trials_complete']}) | "
            f"{row['tuning_seconds']:.0f} | {row['best_validation_ndcg@10']:.4f} | "
            f"{n['estimate']:.4f} [{n['low']:.4f}, {n['high']:.4f}] | "
            f"{r['estimate']:.4f} [{r['low']:.4f}, {r['high']:.4f}] | {d['estimate']:.4f} |"
        )
    for metric, c in comparisons.items():
        ci = c["difference_ci"]
        print(
            f"\n{metric}: iALS - implicit ALS = {c['mean_difference']:+.4f} "
            f"(bootstrap 95% CI [{ci['low']:+.4f}, {ci['high']:+.4f}]; paired t p = "
            f"{c['t_pvalue']:.3g}; Wilcoxon p = {c['wilcoxon_pvalue']:.3g}; n = {c['n']})"
        )


if __name__ == "__main__":
    main()
