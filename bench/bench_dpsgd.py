"""DP-SGD cost: time per epoch of user-level DP-SGD vs the same non-private training, and quality.

For Mult-VAE, BPR and SASRec on the ML-100K holdout protocol (every rating an interaction;
per-user random 80/20 holdout, seed 0):

1. **Time per epoch.** The same model config on the same data (the training part, bounded to
   ``--max-per-user`` rows per user, the data a private fit sees), fitted once without privacy
   and once with ``FitOptions(privacy=PrivacySpec(epsilon=1, ...))``. Epoch times come from the
   fit's progress callback (wall clock and this process's CPU time at the end of each epoch;
   CPU time is less disturbed by other processes on a shared machine); the first epoch is dropped
   (it holds the private fit's noise calibration and torch warm-up) and the median of the
   remaining ``--timing-epochs - 1`` (≥ 3) epochs (of ``--repeats`` alternating fits) is
   reported, with the ratio private / non-private. A private epoch is ``round(n/b)``
   Poisson-sampled steps (every user once in expectation, all of its data), a non-private epoch
   one pass over the users (BPR: over the pairs, in ``batch_size`` triples).
2. **Quality.** NDCG@10 (full ranking, training items excluded) on the holdout's test part of
   the non-private model (fitted on the whole training part) and of private fits at each ε in
   ``--epsilons`` (bound ``--max-per-user``, clipping norm 1, PLD, δ = 1/(10·n_users)), all with
   ``--quality-epochs`` epochs and otherwise default hyper-parameters (none tuned for DP).

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_dpsgd.py --threads 2
    ... --models mult-vae --dataset beauty   # time per epoch of Mult-VAE on Amazon Beauty
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from typing import Any

import numpy as np

from privrank.metrics import EvaluationConfig, evaluate
from privrank.models import FitOptions, create_model
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.protocols import prepare

CONFIGS: dict[str, dict[str, Any]] = {
    "mult-vae": {},
    "bpr": {},
    "sasrec": {},
}


def epoch_times(
    model_name: str, params: dict[str, Any], train, options: FitOptions
) -> tuple[list[float], list[float]]:
    """Wall and CPU (this process, all threads) seconds of each epoch after the first."""
    walls: list[float] = []
    cpus: list[float] = []

    def progress(update: Any) -> None:
        walls.append(time.perf_counter())
        cpus.append(time.process_time())

    model = create_model(model_name, params)
    model.fit(train, options.model_copy(update={"progress": progress}))
    return list(np.diff(walls)), list(np.diff(cpus))


def timing(model_name: str, train, args: argparse.Namespace) -> dict[str, Any]:
    params = {**CONFIGS[model_name], "epochs": args.timing_epochs}
    spec = PrivacySpec(epsilon=1.0, max_interactions_per_user=args.max_per_user, noise_seed=0)
    bounded = spec.bound_contributions(train)
    plain, plain_cpu, private, private_cpu = [], [], [], []
    for _ in range(args.repeats):  # alternate, so that drifting load hits both alike
        wall, cpu = epoch_times(
            model_name, params, bounded, FitOptions(seed=0, threads=args.threads)
        )
        plain, plain_cpu = plain + wall, plain_cpu + cpu
        wall, cpu = epoch_times(
            model_name, params, bounded, FitOptions(seed=0, threads=args.threads, privacy=spec)
        )
        private, private_cpu = private + wall, private_cpu + cpu
    row = {
        "model": model_name,
        "non_private_epoch_s": statistics.median(plain),
        "private_epoch_s": statistics.median(private),
        "non_private_epoch_cpu_s": statistics.median(plain_cpu),
        "private_epoch_cpu_s": statistics.median(private_cpu),
        "non_private_epochs_s": plain,
        "private_epochs_s": private,
    }
    row["ratio"] = row["private_epoch_s"] / row["non_private_epoch_s"]
    row["cpu_ratio"] = row["private_epoch_cpu_s"] / row["non_private_epoch_cpu_s"]
    print(
        f"{model_name:9s} epoch wall: non-private {row['non_private_epoch_s']:.3f} s, DP-SGD "
        f"{row['private_epoch_s']:.3f} s, ratio {row['ratio']:.2f}x; CPU: "
        f"{row['non_private_epoch_cpu_s']:.3f} s vs {row['private_epoch_cpu_s']:.3f} s, ratio "
        f"{row['cpu_ratio']:.2f}x (medians of {len(plain)} epochs)",
        flush=True,
    )
    return row


def quality(model_name: str, prepared, args: argparse.Namespace) -> list[dict[str, Any]]:
    params = {**CONFIGS[model_name], "epochs": args.quality_epochs}
    config = EvaluationConfig(cutoffs=(10,), metrics=("ndcg",), beyond_accuracy=False)
    rows = []
    for epsilon in ([] if args.no_baseline else [None]) + list(args.epsilons):
        privacy = None
        if epsilon is not None:
            privacy = PrivacySpec(
                epsilon=epsilon, max_interactions_per_user=args.max_per_user, noise_seed=0
            )
        started = time.perf_counter()
        model = create_model(model_name, params).fit(
            prepared.train, FitOptions(seed=0, threads=args.threads, privacy=privacy)
        )
        fit_s = time.perf_counter() - started
        result = evaluate(model.score, prepared.history, prepared.test, config)
        ndcg = float(np.mean(result.per_user["ndcg@10"]))
        row = {"model": model_name, "epsilon": epsilon, "ndcg@10": ndcg, "fit_s": fit_s}
        if privacy is not None:
            g = model.privacy_guarantee_
            row.update(
                noise_multiplier=g.noise_multiplier,
                sampling_rate=g.sampling_rate,
                steps=g.steps,
                pld_epsilon=g.pld_epsilon,
                rdp_epsilon=g.rdp_epsilon,
            )
        label = "non-private" if epsilon is None else f"ε={epsilon:g}"
        print(f"{model_name:9s} {label:12s} NDCG@10 {ndcg:.4f}  (fit {fit_s:.1f} s)", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--dataset", choices=["ml100k", "beauty"], default="ml100k")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-per-user", type=int, default=100)
    parser.add_argument("--timing-epochs", type=int, default=4)
    parser.add_argument(
        "--repeats", type=int, default=1, help="Alternating non-private/private fits timed."
    )
    parser.add_argument("--quality-epochs", type=int, default=20)
    parser.add_argument("--epsilons", type=float, nargs="*", default=[1.0, 8.0])
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument(
        "--no-baseline", action="store_true", help="Quality of the private fits only."
    )
    parser.add_argument("--json", default=None, help="Write the results here.")
    args = parser.parse_args()
    if args.timing_epochs < 4:
        parser.error("--timing-epochs must be ≥ 4 (the first epoch is dropped; ≥ 3 remain)")
    protocol = "ml100k-holdout" if args.dataset == "ml100k" else "beauty-loo"
    prepared = prepare(protocol)
    print(
        f"{protocol}: {prepared.train.n_users} users, {prepared.train.n_items} items, "
        f"{len(prepared.train)} training rows; threads {args.threads}; "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: dict[str, Any] = {
        "protocol": protocol,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "load_before": os.getloadavg(),
        "timing": []
        if args.skip_timing
        else [timing(m, prepared.train, args) for m in args.models],
    }
    if not args.skip_quality:
        results["quality"] = [row for m in args.models for row in quality(m, prepared, args)]
    results["load_after"] = os.getloadavg()
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"load average after: {results['load_after'][0]:.2f}; peak RSS of the run "
        f"{results['peak_rss_mib']:.0f} MiB",
        flush=True,
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
