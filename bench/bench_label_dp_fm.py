"""Label DP with a neural CTR ranker (FM) downstream: AUC against ε on a CTR protocol.

Every label of the protocol's training **and validation** parts is randomised once by binary
randomised response at ε (:class:`privrank.privacy.label_dp.RRWithPriorMechanism`, uniform
prior; each row is in one part, so the whole fit is ε-label-DP, δ = 0, unit one example's
label): the ranker early-stops and calibrates on the noisy validation labels, so no true label
is read by training. Its scores estimate :math:`P(\\tilde y = 1 \\mid x) = (1-q) + (2q-1)
P(y = 1 \\mid x)`, a monotone map of the click probability, so AUC on the test part's **true**
labels is unaffected by the map (a served pCTR would invert it). ``inf`` trains on the true
labels in the same process.

Usage::

    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_label_dp_fm.py \\
        --protocol frappe --model fm --epsilons 1,inf --seeds 3 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.metrics import roc_auc_score

from privrank.data.features import CTRFrame
from privrank.models import FitOptions
from privrank.privacy.label_dp import LabelBatch, RRWithPriorMechanism
from privrank.ranking.ctr import create_ranker
from privrank.workflow.ctr_protocols import CTR_PROTOCOLS, prepare_ctr


def randomised(frame: CTRFrame, epsilon: float, rng: np.random.Generator) -> CTRFrame:
    """The frame with every label replaced by one binary randomised response at ε."""
    truth = frame.table.column("label").to_numpy().astype(np.int64)
    batch = LabelBatch(truth, np.full((truth.size, 2), 0.5))
    noisy = RRWithPriorMechanism(epsilon, 2).add_noise(batch, rng).labels
    index = frame.table.column_names.index("label")
    table = frame.table.set_column(index, "label", pa.array(noisy.astype(np.int8)))
    return dataclasses.replace(frame, table=table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="frappe", choices=sorted(CTR_PROTOCOLS))
    parser.add_argument("--model", default="fm")
    parser.add_argument("--params", default="{}", help="JSON ranker parameters")
    parser.add_argument("--epsilons", default="1,inf")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    prepared = prepare_ctr(CTR_PROTOCOLS[args.protocol])
    truth = prepared.test.table.column("label").to_numpy().astype(np.int64)
    rows: list[dict[str, Any]] = []
    for epsilon in sorted((float(e) for e in args.epsilons.split(",")), key=lambda e: -e):
        aucs, seconds = [], []
        for seed in range(1 if math.isinf(epsilon) else args.seeds):
            rng = np.random.default_rng(seed + 1)
            train, validation = prepared.train, prepared.validation
            if not math.isinf(epsilon):
                train, validation = (
                    randomised(train, epsilon, rng),
                    randomised(validation, epsilon, rng),
                )
            ranker = create_ranker(args.model, json.loads(args.params))
            started = time.perf_counter()
            ranker.fit(train, validation, FitOptions(seed=seed, threads=args.threads))
            raw = ranker.predict_raw(ranker.encode(prepared.test))
            aucs.append(float(roc_auc_score(truth, raw)))
            seconds.append(time.perf_counter() - started)
            print(
                f"ε={epsilon:g} seed={seed}: AUC {aucs[-1]:.4f} ({seconds[-1]:.0f} s)", flush=True
            )
        rows.append({"epsilon": epsilon, "auc": float(np.median(aucs)), "aucs": aucs,
                     "seconds": float(np.median(seconds))})  # fmt: skip
    reference = next(r["auc"] for r in rows if math.isinf(r["epsilon"]))
    print(f"| ε | {args.model} median AUC (seeds) | (AUC-0.5)/(non-private {args.model} AUC-0.5) |")
    print("|---|---|---|")
    for row in rows:
        row["retained"] = (row["auc"] - 0.5) / (reference - 0.5)
        every = ", ".join(f"{a:.4f}" for a in row["aucs"])
        print(f"| {row['epsilon']:g} | {row['auc']:.4f} ({every}) | {row['retained']:.3f} |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"date": datetime.now(UTC).isoformat(), "machine": platform.node(),
                       "argv": sys.argv, "rows": rows}, handle, indent=2)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
