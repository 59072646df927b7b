"""LTR reproduction: LightGBM's own ``examples/lambdarank`` vs privrank's LTR path, same run.

The oracle is LightGBM run directly on the example's files with the parameters of its
``train.conf`` (``lgb.Dataset("rank.train")`` loads ``rank.train.query`` itself; the NDCG@1/3/5 on
``rank.test`` are LightGBM's own evaluation). privrank's path reads the same files with
:func:`privrank.data.readers.ltr.read_ltr` (strict validation), fits
:class:`privrank.ranking.ltr.LambdaMART` (defaults = ``train.conf``), scores ``rank.test`` and
computes NDCG@k with :func:`privrank.ranking.ltr.group_ndcg`. The neural
:class:`~privrank.ranking.ltr.ListwiseRanker` (softmax and ApproxNDCG) is compared on the same
test part; its early stopping uses a validation part of 20 % of the *training* queries (seeded),
never the test part.

Usage::

    PRIVRANK_DATA_DIR=/work/shared/data .venv/bin/python bench/bench_ltr.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from privrank.data.readers.ltr import read_ltr
from privrank.ranking.ltr import LambdaMART, ListwiseRanker, LTRFitOptions, group_ndcg

TRAIN_CONF = {  # LightGBM examples/lambdarank/train.conf
    "objective": "lambdarank",
    "metric": "ndcg",
    "ndcg_eval_at": [1, 3, 5],
    "max_bin": 255,
    "num_trees": 100,
    "learning_rate": 0.1,
    "num_leaves": 31,
    "tree_learner": "serial",
    "feature_fraction": 1.0,
    "bagging_freq": 1,
    "bagging_fraction": 0.9,
    "min_data_in_leaf": 50,
    "min_sum_hessian_in_leaf": 5.0,
}
KS = (1, 3, 5)


def lightgbm_direct(folder: Path, threads: int) -> tuple[dict[str, float], float]:
    """LightGBM on the example's files with train.conf's parameters (the oracle)."""
    import lightgbm as lgb

    params = {**TRAIN_CONF, "deterministic": True, "verbosity": -1, "num_threads": threads}
    started = time.perf_counter()
    train = lgb.Dataset(str(folder / "rank.train"), params={"max_bin": 255})
    test = lgb.Dataset(str(folder / "rank.test"), reference=train)
    evals: dict = {}
    lgb.train(
        params,
        train,
        num_boost_round=TRAIN_CONF["num_trees"],
        valid_sets=[test],
        valid_names=["test"],
        callbacks=[lgb.record_evaluation(evals)],
    )
    seconds = time.perf_counter() - started
    return {f"ndcg@{k}": float(evals["test"][f"ndcg@{k}"][-1]) for k in KS}, seconds


def privrank_lambdamart(folder: Path, threads: int) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    train = read_ltr(folder / "rank.train")
    test = read_ltr(folder / "rank.test")
    ranker = LambdaMART().fit(train, options=LTRFitOptions(threads=threads))
    scores = ranker.score(test.features)
    seconds = time.perf_counter() - started
    return {f"ndcg@{k}": group_ndcg(scores, test.labels, test.group_sizes, k) for k in KS}, seconds


def privrank_listwise(folder: Path, loss: str, seed: int) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    train = read_ltr(folder / "rank.train")
    test = read_ltr(folder / "rank.test")
    order = np.random.default_rng(seed).permutation(train.n_queries)
    cut = int(0.8 * train.n_queries)
    fit, validation = train.take(np.sort(order[:cut])), train.take(np.sort(order[cut:]))
    ranker = ListwiseRanker(loss=loss, eval_at=5, epochs=200, patience=20)
    ranker.fit(fit, validation, LTRFitOptions(seed=seed, threads=1))
    scores = ranker.score(test.features)
    seconds = time.perf_counter() - started
    return {f"ndcg@{k}": group_ndcg(scores, test.labels, test.group_sizes, k) for k in KS}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(os.environ.get("PRIVRANK_DATA_DIR", "../shared/data")) / "ltr-lightgbm-lambdarank"
    rows: dict[str, list[tuple[dict[str, float], float]]] = {}
    for repeat in range(args.repeats):
        rows.setdefault("lightgbm (direct, train.conf)", []).append(
            lightgbm_direct(folder, args.threads)
        )
        rows.setdefault("privrank lambdamart", []).append(privrank_lambdamart(folder, args.threads))
        for loss in ("softmax", "approx-ndcg"):
            rows.setdefault(f"privrank listwise ({loss})", []).append(
                privrank_listwise(folder, loss, seed=repeat)
            )
    report = {}
    oracle = rows["lightgbm (direct, train.conf)"]
    print(f"{'pipeline':34s} " + " ".join(f"{'NDCG@' + str(k):>9s}" for k in KS) + "  median s")
    for name, runs in rows.items():
        means = {m: statistics.median(r[0][m] for r in runs) for m in runs[0][0]}
        seconds = statistics.median(r[1] for r in runs)
        report[name] = {"median": means, "runs": [r[0] for r in runs], "seconds": seconds}
        print(
            f"{name:34s} "
            + " ".join(f"{means[f'ndcg@{k}']:9.4f}" for k in KS)
            + f"  {seconds:8.2f}"
        )
    ours = rows["privrank lambdamart"]
    diffs = [abs(a[0][m] - b[0][m]) for a, b in zip(ours, oracle, strict=True) for m in a[0]]
    print(f"max |privrank lambdamart - lightgbm direct| over runs and k: {max(diffs):.2e}")
    report["max_abs_difference_lambdamart_vs_lightgbm"] = max(diffs)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
