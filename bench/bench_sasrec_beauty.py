"""SASRec on Amazon Beauty, leave-one-out, full ranking (the protocol of DESIGN.md).

Protocol: each user's last item is test, the one before it validation (early stopping on
validation NDCG@10); at test time the history is train + validation and every item is ranked
with the history removed; HR@10 and NDCG@10 are averaged over all test users. Prints seconds
per epoch, the time to the best epoch and the test quality, and writes them as JSON.

Usage::

    .venv/bin/python bench/bench_sasrec_beauty.py --threads 1 --validate-every 2 --patience 4 \
        --out bench/results/sasrec_beauty.json

The data path defaults to ``$PRIVRANK_DATA_DIR/amazon-seqrec-s3rec/Beauty.txt`` (else
``../shared/data/...``). Reference numbers (full ranking): SASRec NDCG@10 0.0318 / HR@10 0.0605
(S3-Rec authors), eSASRec NDCG@10 0.0523 / Recall@10 0.0928 (arXiv 2508.06450).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from privrank.data.interactions import Interactions
from privrank.data.readers.api import read_interactions
from privrank.data.splits import LeaveLastOut, split
from privrank.metrics.stats import bootstrap_cis
from privrank.models._query import Query
from privrank.models._torch_training import ranking_metrics
from privrank.models.base import FitOptions, FitProgress
from privrank.models.sasrec import SASRec, appended_sequences

REFERENCES = {
    "SASRec (S3-Rec authors, full ranking)": {"ndcg@10": 0.0318, "hr@10": 0.0605},
    "eSASRec (arXiv 2508.06450)": {"ndcg@10": 0.0523, "hr@10": 0.0928},
}


def default_data() -> Path:
    root = Path(os.environ.get("PRIVRANK_DATA_DIR", Path(__file__).parents[2] / "shared/data"))
    return root / "amazon-seqrec-s3rec" / "Beauty.txt"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument(
        "--format",
        default="sequences",
        choices=["sequences", "pairs"],
        help="sequences: Beauty.txt (a user per line); pairs: Video.txt (user item per line)",
    )
    parser.add_argument(
        "--loss", default="softmax", choices=["softmax", "sampled-softmax", "gbce", "bce"]
    )
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--negative-sharing", default="batch", choices=["batch", "position"])
    parser.add_argument("--gbce-t", type=float, default=0.75)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=50)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--validate-every", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--save", type=Path, default=None, help="save the trained model here")
    parser.add_argument(
        "--refit",
        action="store_true",
        help="SASRec's refit option: after early stopping, retrain for the best epoch count on "
        "train + validation",
    )
    parser.add_argument(
        "--one-item-earlier",
        action="store_true",
        help="drop every user's test item and run the protocol one item earlier: the reported "
        "'test' is then the protocol's validation item (a figure to choose settings on, e.g. "
        "whether to --refit)",
    )
    parser.add_argument(
        "--train-on-validation",
        action="store_true",
        help="the refit's second run alone: train exactly --epochs epochs on train + validation "
        "(no early stopping; the epoch count must come from a validated run)",
    )
    return parser.parse_args(argv)


def test_metrics(model: SASRec, train, validation, test) -> dict[str, float]:
    """HR@10 and NDCG@10 of the test items, history = train + validation, history masked."""
    indptr_t, items_t = train.sequences()
    indptr_v, items_v = validation.sequences()
    indptr_x, items_x = test.sequences()
    users = np.flatnonzero(np.diff(indptr_x) > 0)
    histories = [
        np.concatenate(
            [items_t[indptr_t[u] : indptr_t[u + 1]], items_v[indptr_v[u] : indptr_v[u + 1]]]
        )
        for u in users
    ]
    targets = [items_x[indptr_x[u] : indptr_x[u + 1]] for u in users]
    ndcg, hit = [], []
    for start in range(0, len(users), 1024):
        query = Query.histories(histories[start : start + 1024])
        scores = model.score(query)
        rows, cols = query.to_csr(model.n_items_).nonzero()
        scores[rows, cols] = -np.inf
        n, h = ranking_metrics(scores, targets[start : start + 1024], 10)
        ndcg.append(n)
        hit.append(h)
    per_user = {"ndcg@10": np.concatenate(ndcg), "hr@10": np.concatenate(hit)}
    cis = bootstrap_cis(per_user)  # percentile bootstrap over users, 95%, 1,000 resamples
    return {
        "ndcg@10": float(per_user["ndcg@10"].mean()),
        "hr@10": float(per_user["hr@10"].mean()),
        "ndcg@10_ci95": [cis["ndcg@10"].low, cis["ndcg@10"].high],
        "hr@10_ci95": [cis["hr@10"].low, cis["hr@10"].high],
        "users": len(users),
    }


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    data = read_interactions(args.data, args.format).interactions
    if args.one_item_earlier:  # the test items never enter this run
        data = split(data, LeaveLastOut(k=1, validation=False)).train
    parts = split(data, LeaveLastOut(k=1, validation=True))
    print(
        f"data: {data} | train {len(parts.train)} validation {len(parts.validation)} "
        f"test {len(parts.test)} rows | read+split {time.perf_counter() - started:.1f}s"
    )
    model = SASRec(
        factors=args.factors,
        blocks=args.blocks,
        heads=args.heads,
        max_length=args.max_length,
        dropout=args.dropout,
        loss=args.loss,
        negatives=args.negatives,
        negative_sharing=args.negative_sharing,
        gbce_t=args.gbce_t,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        validate_every=args.validate_every,
        max_seconds=None if args.max_minutes is None else args.max_minutes * 60,
        refit=args.refit,
        carve_validation=not args.train_on_validation,
    )
    print(model, flush=True)
    epochs: list[dict] = []
    last = [0.0]

    def progress(report: FitProgress) -> None:
        seconds = report.elapsed_s - last[0]
        last[0] = report.elapsed_s
        row = {
            "epoch": report.epoch,
            "loss": report.loss,
            "elapsed_s": report.elapsed_s,
            "epoch_s": seconds,
            **report.metrics,
        }
        epochs.append(row)
        shown = " ".join(f"{k} {v:.4f}" for k, v in report.metrics.items())
        print(
            f"epoch {report.epoch:3d} loss {report.loss:.4f} {shown} "
            f"({seconds:.1f}s, total {report.elapsed_s:.0f}s)",
            flush=True,
        )

    fit_on, validation = parts.train, parts.validation
    if args.train_on_validation:  # train + validation, each user's validation item last
        indptr, items = appended_sequences(*parts.train.sequences(), parts.validation)
        users = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        fit_on = Interactions.from_codes(
            users, items, n_users=parts.train.n_users, n_items=parts.train.n_items
        )
        validation = None
    options = FitOptions(
        seed=args.seed, threads=args.threads, progress=progress, validation=validation
    )
    fit_started = time.perf_counter()
    model.fit(fit_on, options)
    fit_s = time.perf_counter() - fit_started
    if args.save is not None:
        model.save(args.save)
    result = test_metrics(model, parts.train, parts.validation, parts.test)
    best = model.best_epoch_
    best_row = next(r for r in epochs if r["epoch"] == best)
    if args.train_on_validation:  # nothing validated: no validation figures
        best_row = epochs[-1]
    train_s = [r["epoch_s"] for r in epochs]
    summary = {
        "command": "bench/bench_sasrec_beauty.py " + " ".join(argv),
        "config": model.config.model_dump(),
        "threads": torch.get_num_threads() if args.threads == 0 else args.threads,
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "epochs_run": len(epochs),
        "best_epoch": best,
        "seconds_per_epoch_median": float(np.median(train_s)),
        "seconds_to_best_epoch": best_row["elapsed_s"],
        "fit_seconds": fit_s,
        "test": result,
        "validation_at_best": {k: best_row.get(k) for k in ("ndcg@10", "hr@10")},
        "references": REFERENCES,
        "epochs": epochs,
    }
    print(
        f"test ({result['users']} users): NDCG@10 {result['ndcg@10']:.4f} "
        f"[{result['ndcg@10_ci95'][0]:.4f}, {result['ndcg@10_ci95'][1]:.4f}] "
        f"HR@10 {result['hr@10']:.4f} "
        f"[{result['hr@10_ci95'][0]:.4f}, {result['hr@10_ci95'][1]:.4f}] | "
        f"best epoch {best} of {len(epochs)}, "
        f"{summary['seconds_per_epoch_median']:.1f} s/epoch (median, incl. validation), "
        f"{best_row['elapsed_s']:.0f}s to the best epoch, fit {fit_s:.0f}s"
    )
    for name, ref in REFERENCES.items():
        print(f"  reference {name}: NDCG@10 {ref['ndcg@10']} HR@10 {ref['hr@10']}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
