"""Label DP: the privacy-utility curve, AUC against ε (RRWithPrior, LightGBM downstream).

For every ε in ``--epsilons`` (``inf``: the non-private run, in the same process on the same
rows) a LightGBM click model is trained on labels randomised by RRWithPrior (one stage: plain
randomised response on every row; ``--stages 2``: LP-MST, Ghazi et al. 2021) and scored on the
test part's *true* labels with scikit-learn's ``roc_auc_score``. The report gives, per ε, AUC,
(AUC − 0.5) / (non-private AUC − 0.5) (the issue's target: ≥ 0.9 at ε = 1), and the time.

The data comes from a loader (``--data NAME[:PATH]``): ``synthetic:DIR`` reads a log written by
``privrank data synth-ads`` (first ``--train-rows`` rows to train, the next ``--test-rows`` to
test: a split in time); ``frappe:validation`` / ``frappe:test`` read the ``frappe`` CTR protocol
(train on its training part; score its validation part to choose settings, its test part for
the report). Another data set is added by registering a function in :data:`LOADERS`.

``--methods label-sums`` adds label-DP logistic regression from Laplace-noised label sums
(:mod:`privrank.ranking.label_sums_logistic`; ``--sums-fields``, ``--sums-crosses``,
``--sums-min-count``, ``--sums-l2``), fitted also at ε = inf (its own non-private reference);
every row's ``retained`` is against the non-private LightGBM (the stronger reference) and
``retained_own`` against the same method's non-private fit.

``--methods lp-mst,rr-posterior`` compares the plain / multi-stage randomised response with RR
and a cross-fitted posterior (``--folds``, ``--rounds``); ``--seeds N`` repeats every private
fit with N noise seeds (and row orders) and reports the median (the non-private run is
deterministic given the data and is fitted once); ``--threads`` sets LightGBM's threads (1 is
much faster than 2 on a loaded machine).

Usage::

    .venv/bin/python bench/bench_label_dp.py --data synthetic:/tmp/synth10m \\
        --train-rows 2000000 --test-rows 1000000 --epsilons 0.5,1,2,4,inf --stages 1,2
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from privrank.data.synthetic_ads import FEATURE_COLUMNS, read_ad_log
from privrank.ranking.gbdt_click import GBDTClickConfig
from privrank.ranking.label_sums_logistic import LabelSumsConfig, LabelSumsLogistic
from privrank.workflow.label_dp_training import CATEGORICAL_COLUMNS, fit_label_dp


@dataclass
class Split:
    """Train and test columns of one data set, labels 0/1."""

    name: str
    train: dict[str, np.ndarray]
    train_labels: np.ndarray
    test: dict[str, np.ndarray]
    test_labels: np.ndarray
    feature_names: tuple[str, ...]
    categorical: tuple[str, ...]
    oracle_auc: float | None = None


def load_synthetic(path: str, train_rows: int, test_rows: int) -> Split:
    """The first ``train_rows`` rows train, the next ``test_rows`` test (time order)."""
    table = read_ad_log(path, [*FEATURE_COLUMNS, "click", "p_click"], train_rows + test_rows)
    columns = {name: table.column(name).to_numpy() for name in FEATURE_COLUMNS}
    labels = table.column("click").to_numpy().astype(np.int64)
    truth = table.column("p_click").to_numpy()
    cut = train_rows
    return Split(
        name=f"synthetic:{path}",
        train={k: v[:cut] for k, v in columns.items()},
        train_labels=labels[:cut],
        test={k: v[cut:] for k, v in columns.items()},
        test_labels=labels[cut:],
        feature_names=FEATURE_COLUMNS,
        categorical=CATEGORICAL_COLUMNS,
        oracle_auc=float(roc_auc_score(labels[cut:], truth[cut:])),
    )


def _codes(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a categorical column, vocabulary from ``train`` (unseen: its own code)."""
    vocabulary, train_codes = np.unique(train, return_inverse=True)
    position = np.searchsorted(vocabulary, other)
    position = np.minimum(position, len(vocabulary) - 1)
    known = vocabulary[position] == other
    return train_codes.astype(np.int64), np.where(known, position, len(vocabulary)).astype(np.int64)


def load_frappe(part: str, train_rows: int, test_rows: int) -> Split:
    """The ``frappe`` CTR protocol (seeded 70/10/20 re-split): train on its training part, score
    on ``validation`` (choosing settings) or ``test`` (the report). Row limits are ignored."""
    from privrank.workflow.ctr_protocols import CTR_PROTOCOLS, prepare_ctr

    if part not in ("validation", "test"):
        raise SystemExit(f"frappe:PART needs PART validation or test, got {part!r}")
    prepared = prepare_ctr(CTR_PROTOCOLS["frappe"])
    train, scored = prepared.train, getattr(prepared, part)
    names = tuple(train.categorical)
    train_columns, scored_columns = {}, {}
    for name in names:
        train_columns[name], scored_columns[name] = _codes(
            np.asarray(train.table.column(name).to_numpy(zero_copy_only=False), dtype=str),
            np.asarray(scored.table.column(name).to_numpy(zero_copy_only=False), dtype=str),
        )
    return Split(
        name=f"frappe:{part}",
        train=train_columns,
        train_labels=train.table.column("label").to_numpy().astype(np.int64),
        test=scored_columns,
        test_labels=scored.table.column("label").to_numpy().astype(np.int64),
        feature_names=names,
        categorical=names,
    )


#: Loaders by name: ``NAME[:ARGUMENT]`` on the command line.
LOADERS: dict[str, Callable[[str, int, int], Split]] = {
    "synthetic": load_synthetic,
    "frappe": load_frappe,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="NAME[:ARG], NAME in " + ",".join(LOADERS))
    parser.add_argument("--train-rows", type=int, default=2_000_000)
    parser.add_argument("--test-rows", type=int, default=1_000_000)
    parser.add_argument("--epsilons", default="0.5,1,2,4,inf")
    parser.add_argument("--stages", default="1", help="comma-separated stage counts")
    parser.add_argument("--trees", type=int, default=150)
    parser.add_argument("--leaves", type=int, default=15)
    parser.add_argument("--min-data-in-leaf", type=int, default=2000)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds per private fit")
    parser.add_argument("--methods", default="lp-mst", help="lp-mst and/or rr-posterior")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sums-fields", default="", help="label-sums fields (default: all)")
    parser.add_argument(
        "--sums-crosses", default="", help="label-sums crosses, e.g. user*item,user*city"
    )
    parser.add_argument("--sums-min-count", type=int, default=1)
    parser.add_argument("--sums-l2", type=float, default=1.0)
    parser.add_argument(
        "--sums-noise-ridge",
        type=float,
        default=0.03,
        help="label sums: c of the noise ridge (LabelSumsConfig.noise_ridge; 0: off, the "
        "pre-session-10 rule)",
    )
    parser.add_argument(
        "--sums-inconsistent",
        action="store_true",
        help="label sums: skip the consistency step (consistent_sums), the pre-ctr7 rule",
    )
    parser.add_argument("--out", default=None, help="JSON results file")
    args = parser.parse_args(argv)
    name, _, arg = args.data.partition(":")
    if name not in LOADERS:
        parser.error(f"unknown data {name!r}; known: {', '.join(LOADERS)}")
    split = LOADERS[name](arg, args.train_rows, args.test_rows)
    config = GBDTClickConfig(
        n_estimators=args.trees,
        num_leaves=args.leaves,
        min_data_in_leaf=args.min_data_in_leaf,
        learning_rate=args.learning_rate,
        seed=args.seed,
        threads=args.threads,
    )
    epsilons = [float(e) for e in args.epsilons.split(",")]
    stage_counts = [int(s) for s in args.stages.split(",")]
    methods = args.methods.split(",")
    variants = [("lp-mst", s) for s in stage_counts if "lp-mst" in methods]
    variants += [("rr-posterior", 1)] if "rr-posterior" in methods else []
    variants += [("label-sums", 1)] if "label-sums" in methods else []
    sums_fields = tuple(args.sums_fields.split(",")) if args.sums_fields else split.feature_names
    sums_config = LabelSumsConfig(
        crosses=tuple(
            tuple(c.split("*"))
            for c in args.sums_crosses.split(",")
            if c  # type: ignore[misc]
        ),
        min_count=args.sums_min_count,
        l2=args.sums_l2,
        noise_ridge=args.sums_noise_ridge,
        consistent=not args.sums_inconsistent,
    )
    rows: list[dict[str, Any]] = []
    for epsilon in sorted(epsilons, key=lambda e: -e):  # inf first: the reference
        public = [("none", 1)] + ([("label-sums", 1)] if "label-sums" in methods else [])
        for method, stages in public if math.isinf(epsilon) else variants:
            aucs, seconds, reports_by_seed = [], [], []
            for seed in range(args.seed, args.seed + (1 if math.isinf(epsilon) else args.seeds)):
                started = time.perf_counter()
                if method == "label-sums":
                    sums_model = LabelSumsLogistic(sums_fields, sums_config).fit(
                        split.train, split.train_labels, epsilon, np.random.default_rng(seed + 1)
                    )
                    aucs.append(
                        float(roc_auc_score(split.test_labels, sums_model.predict_ctr(split.test)))
                    )
                    seconds.append(time.perf_counter() - started)
                    reports_by_seed.append([])
                    print(
                        f"ε={epsilon:g} label-sums seed={seed}: AUC {aucs[-1]:.4f} "
                        f"({seconds[-1]:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                model, _, reports = fit_label_dp(
                    split.train,
                    split.train_labels,
                    epsilon,
                    stages=stages,
                    config=config,
                    seed=seed,
                    noise_rng=np.random.default_rng(seed + 1),
                    feature_names=split.feature_names,
                    categorical=split.categorical,
                    method="lp-mst" if method == "none" else method,  # type: ignore[arg-type]
                    folds=args.folds,
                    rounds=args.rounds,
                )
                aucs.append(float(roc_auc_score(split.test_labels, model.predict_ctr(split.test))))
                seconds.append(time.perf_counter() - started)
                reports_by_seed.append([vars(r) for r in reports])
                print(
                    f"ε={epsilon:g} {method} stages={stages} seed={seed}: AUC {aucs[-1]:.4f} "
                    f"({seconds[-1]:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append(
                {
                    "epsilon": epsilon,
                    "method": method,
                    "stages": stages,
                    "auc": float(np.median(aucs)),
                    "aucs": aucs,
                    "seconds": float(np.median(seconds)),
                    "stage_reports": reports_by_seed,
                }
            )
    reference = next(r["auc"] for r in rows if math.isinf(r["epsilon"]) and r["method"] == "none")
    own = {r["method"]: r["auc"] for r in rows if math.isinf(r["epsilon"])}
    own["lp-mst"] = own["rr-posterior"] = reference
    for row in rows:
        row["retained"] = (row["auc"] - 0.5) / (reference - 0.5)
        mine = own.get(row["method"], reference)
        row["retained_own"] = (row["auc"] - 0.5) / (mine - 0.5)
    print(
        f"data {split.name}: train {split.train_labels.size:,} rows, test "
        f"{split.test_labels.size:,}; oracle AUC (true p_click) {split.oracle_auc}"
    )
    print(
        "| ε | method | stages | median AUC (seeds) | retained vs non-private LightGBM "
        "| retained vs own non-private | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        every = ", ".join(f"{a:.4f}" for a in row["aucs"])
        print(
            f"| {row['epsilon']:g} | {row['method']} | {row['stages']} | {row['auc']:.4f} "
            f"({every}) | {row['retained']:.3f} | {row['retained_own']:.3f} "
            f"| {row['seconds']:.0f} |"
        )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "date": datetime.now(UTC).isoformat(),
                    "machine": platform.node(),
                    "argv": sys.argv,
                    "data": split.name,
                    "oracle_auc": split.oracle_auc,
                    "config": config.model_dump(),
                    "methods": methods,
                    "folds": args.folds,
                    "rounds": args.rounds,
                    "label_sums": {"fields": sums_fields, **sums_config.model_dump()},
                    "seeds": args.seeds,
                    "rows": rows,
                },
                handle,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
