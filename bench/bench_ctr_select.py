"""Choose CTR training settings on validation parts only: every candidate, every data set.

Each candidate (a model and parameter overrides) is fitted on a data set's train part with
early stopping on its validation part; the line printed per fit is the validation AUC and log
loss of the kept epoch (uncalibrated), the epochs run and the fit time. No test row is read:
``frappe`` and ``ipinyou`` use their protocol's train and validation parts, and
``synthetic:PATH`` the first ``--train-rows`` impressions of the log and the next
``--valid-rows`` (a split in time).

``--train-fractions 0.25,0.5,1`` fits every candidate on seeded subsets of the train part (a
learning curve: how much AUC more training rows buy, e.g. to judge a protocol that has a third
of a published split's rows).

Run::

    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_ctr_select.py \
        --data frappe,ipinyou,synthetic:/tmp/adlog1m \
        --candidates '[["deepfm", {}], ["deepfm", {"embedding_l2": 0.0}]]' --out select.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from privrank.data.ad_log_frames import ad_log_frame
from privrank.data.features import CTRFrame
from privrank.metrics.ctr import auc, log_loss
from privrank.models import FitOptions
from privrank.ranking.ctr import create_ranker
from privrank.workflow.ctr_protocols import CTR_PROTOCOLS, prepare_ctr


def load(name: str, train_rows: int, valid_rows: int) -> tuple[CTRFrame, CTRFrame]:
    """``(train, validation)`` of a data set named on the command line (no test rows)."""
    if name.startswith("synthetic:"):
        path = name.split(":", 1)[1]
        train, _ = ad_log_frame(path, start=0, rows=train_rows)
        valid, _ = ad_log_frame(path, start=train_rows, rows=valid_rows)
        return train, valid
    prepared = prepare_ctr(CTR_PROTOCOLS[name])
    return prepared.train, prepared.validation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="frappe")
    parser.add_argument("--candidates", required=True, help="JSON [[model, {params}], ...]")
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--valid-rows", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-fractions", default="1", help="comma-separated, in (0, 1]")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    candidates: list[tuple[str, dict[str, Any]]] = json.loads(args.candidates)
    results = []
    for data in args.data.split(","):
        full, valid = load(data, args.train_rows, args.valid_rows)
        y = valid.labels
        order = np.random.default_rng(args.seed).permutation(len(full))
        for fraction, (model, params) in (
            (float(f), c) for f in args.train_fractions.split(",") for c in candidates
        ):
            train = full if fraction == 1 else full.take(order[: round(fraction * len(full))])
            ranker = create_ranker(model, {**params, "calibration": "none"})
            started = time.perf_counter()
            ranker.fit(train, valid, FitOptions(seed=args.seed, threads=args.threads))
            seconds = time.perf_counter() - started
            p = ranker.predict_raw(valid)
            row = {
                "data": data,
                "model": model,
                "params": params,
                "train_rows": len(train),
                "val_auc": auc(y, p),
                "val_log_loss": log_loss(y, p),
                "epochs": len(ranker.history_),
                "fit_s": seconds,
                "history": ranker.history_,
            }
            results.append(row)
            print(
                f"{data:>24} {len(train):>8} {model:>9} {json.dumps(params):<50} "
                f"AUC {row['val_auc']:.4f} "
                f"LL {row['val_log_loss']:.4f} ep {row['epochs']:>2} {seconds:6.1f}s",
                flush=True,
            )
            if args.out is not None:
                args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
