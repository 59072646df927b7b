"""Equal tuning budget: each privrank model against its implicit peer, tuned alike, per protocol.

For each protocol (``--protocols``) and each pair (``--pairs``, default iALS vs implicit's ALS
and BPR vs implicit's BPR):

1. A validation part carved from **training data only**: on a protocol with a validation part
   (``beauty-loo``, ``video-loo``: each user's second-to-last item) the search fits on
   ``train`` and scores that part; otherwise (``ml100k-holdout``) ``train`` is split again by a
   per-user random holdout (:func:`privrank.tuning.carve_validation`, ``--validation-fraction``,
   seed ``--validation-seed``). The test part is not read while tuning.
2. Both models of the pair are tuned by :func:`privrank.tuning.tune` with the **same budget**:
   the same trial count (``--trials``), the same wall-clock cap (``--time-budget`` seconds per
   model), the same sampler (TPE), seed and threads; their search spaces are those of
   :mod:`privrank.tuning.search_spaces`, and each study's first trial is the model's defaults.
3. Each tuned config is fitted and evaluated as ``privrank evaluate`` does
   (:func:`privrank.workflow.runner.fit_and_evaluate`: on a leave-one-out protocol every test
   history is folded in, or the model refitted on train + validation when it cannot fold in):
   test NDCG@10 with a percentile-bootstrap 95% CI over users, and the paired difference
   (ours − peer) with its bootstrap CI.

Each finished (protocol, pair) appends one JSON line to ``--out``. Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_equal_budget.py \\
        --protocols ml100k-holdout --trials 8 --time-budget 600 --threads 1 \\
        --out /tmp/equal_budget.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

from privrank.metrics import bootstrap_cis, paired_comparison
from privrank.tuning import TuneConfig, carve_validation, tune
from privrank.workflow.protocols import PreparedProtocol, prepare
from privrank.workflow.run_config import ModelSpec, RunConfig
from privrank.workflow.runner import fit_and_evaluate

PAIRS = (("ials", "implicit-als"), ("bpr", "implicit-bpr"))
METRIC = "ndcg@10"


def tuning_parts(prepared: PreparedProtocol, args: argparse.Namespace) -> tuple[Any, Any, str]:
    """``(fit part, validation part, how it was carved)``: both from training data only."""
    if prepared.validation is not None and len(prepared.validation):
        return prepared.train, prepared.validation, "the protocol's validation part"
    fit, validation = carve_validation(
        prepared.train, args.validation_fraction, args.validation_seed
    )
    return (
        fit,
        validation,
        (f"per-user random {args.validation_fraction:.0%} of train (seed {args.validation_seed})"),
    )


def tuned_test(
    prepared: PreparedProtocol, name: str, args: argparse.Namespace
) -> tuple[dict[str, Any], Any]:
    """Tune ``name`` on the carve, then fit and evaluate its best config on test."""
    fit, validation, carve = tuning_parts(prepared, args)
    budget = TuneConfig(
        metric=METRIC,
        n_trials=args.trials,
        time_budget_s=args.time_budget,
        seed=args.seed,
        threads=args.threads,
    )

    def show(record: Any) -> None:
        value = "-" if record.value is None else f"{record.value:.4f}"
        print(
            f"  {name} #{record.number} {record.state} {value} {record.seconds:.1f}s "
            f"{record.params} {record.note}",
            flush=True,
        )

    tuned = tune(name, fit, validation, budget, on_trial=show)
    run_config = RunConfig(
        protocols=(prepared.spec.name,),
        models=(ModelSpec(name=name, params=tuned.best_config),),
        threads=args.threads,
        seed=args.seed,
        beyond_accuracy=False,
        n_resamples=args.resamples,
    )
    run = fit_and_evaluate(prepared, run_config.models[0], run_config)
    per_user = run.result.per_user[METRIC]
    ci = bootstrap_cis({METRIC: per_user}, n_resamples=args.resamples, seed=0)[METRIC]
    states = [t.state for t in tuned.trials]
    row = {
        "model": name,
        "carve": carve,
        "trials_run": len(tuned.trials),
        "trials_complete": states.count("COMPLETE"),
        "tuning_s": round(tuned.elapsed_s, 1),
        "stop_reason": tuned.stop_reason,
        "best_trial": tuned.best_trial,
        "best_validation": tuned.best_value,
        "best_params": tuned.best_params,
        "history_mode": run.history_mode,
        "fit_s": run.fit_seconds,
        "test": ci.to_dict(),
    }
    return row, per_user


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", default="ml100k-holdout,beauty-loo,video-loo")
    parser.add_argument(
        "--pairs", default=",".join(f"{a}:{b}" for a, b in PAIRS), help="ours:peer,..."
    )
    parser.add_argument("--trials", type=int, default=10, help="trials per model")
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--validation-seed", type=int, default=1)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", default=None, help="JSON lines, appended")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = [tuple(pair.split(":")) for pair in args.pairs.split(",")]
    for protocol in args.protocols.split(","):
        prepared = prepare(protocol)
        for ours, peer in pairs:
            started = time.perf_counter()
            ours_row, ours_users = tuned_test(prepared, ours, args)
            peer_row, peer_users = tuned_test(prepared, peer, args)
            paired = paired_comparison(ours_users, peer_users, n_resamples=args.resamples)
            line = json.dumps(
                {
                    "protocol": protocol,
                    "budget": {"trials": args.trials, "seconds": args.time_budget},
                    "ours": ours_row,
                    "peer": peer_row,
                    "ours_minus_peer": paired.to_dict(),
                    "wall_s": round(time.perf_counter() - started, 1),
                    "load_average": os.getloadavg()[0],
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                },
                default=str,
            )
            print(line, flush=True)
            if args.out is not None:
                with open(args.out, "a", encoding="utf-8") as out:
                    out.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
