"""AUC against ε for user-level DP-SGD CTR rankers, with the non-private fit in the same run.

For each ε of ``--epsilons`` (``inf``: the ordinary non-private fit of the same ranker, early
stopping on validation log loss) the ranker is trained on the data set's train part and scored
on its test part (raw, uncalibrated predictions: calibration does not move the AUC's ranking
much and is fitted on the validation part). Printed per ε: test AUC, the share of the
non-private (AUC − 0.5) it keeps, the noise multiplier, the users and rows trained on and the
fit time. The private fits keep the last iterate of ``epochs`` (no early stopping under DP).

Data: ``frappe`` (the CTR protocol: unit of privacy = frappe's ``user``, 886 training users
with at least one row) or ``synthetic:PATH`` (an ad log: the first ``--train-rows``
impressions train, the next ``--valid-rows`` validate, the next ``--test-rows`` test; unit of
privacy = ``user_id``).

Run::

    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_ctr_dpsgd.py --data frappe \
        --model fm --epsilons 0.5,1,2,4,8,inf --max-rows-per-user 100 --out dpsgd_frappe.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from privrank.data.ad_log_frames import ad_log_frame
from privrank.data.features import CTRFrame
from privrank.metrics.ctr import auc
from privrank.models import FitOptions
from privrank.privacy.spec import PrivacySpec
from privrank.ranking.ctr import create_ranker
from privrank.workflow.ctr_protocols import CTR_PROTOCOLS, prepare_ctr


def load(name: str, train_rows: int, valid_rows: int, test_rows: int) -> list[CTRFrame]:
    """``[train, validation, test]``."""
    if name.startswith("synthetic:"):
        path = name.split(":", 1)[1]
        spans = [(0, train_rows), (train_rows, valid_rows), (train_rows + valid_rows, test_rows)]
        return [ad_log_frame(path, start=s, rows=n)[0] for s, n in spans]
    prepared = prepare_ctr(CTR_PROTOCOLS[name])
    return [prepared.train, prepared.validation, prepared.test]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="frappe")
    parser.add_argument("--model", default="fm")
    parser.add_argument("--params", default="{}", help="JSON ranker parameters")
    parser.add_argument("--epsilons", default="0.5,1,2,4,8,inf")
    parser.add_argument("--max-rows-per-user", type=int, default=100)
    parser.add_argument("--clipping-norm", type=float, default=1.0)
    parser.add_argument("--train-rows", type=int, default=500_000)
    parser.add_argument("--valid-rows", type=int, default=100_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    train, valid, test = load(args.data, args.train_rows, args.valid_rows, args.test_rows)
    params = json.loads(args.params)
    rows = []
    epsilons = [float(e) for e in args.epsilons.split(",")]
    for eps in sorted(epsilons, key=lambda e: -e):  # inf first: the reference
        ranker = create_ranker(args.model, params)
        privacy = None
        if math.isfinite(eps):
            privacy = PrivacySpec(
                epsilon=eps,
                max_interactions_per_user=args.max_rows_per_user,
                clipping_norm=args.clipping_norm,
            )
        started = time.perf_counter()
        ranker.fit(train, valid, FitOptions(seed=args.seed, threads=args.threads, privacy=privacy))
        seconds = time.perf_counter() - started
        value = auc(test.labels, ranker.predict_raw(test))
        facts = getattr(ranker, "privacy_facts_", None) or {}
        row = {
            "epsilon": eps,
            "test_auc": value,
            "epochs": len(ranker.history_),
            "fit_s": seconds,
            "noise_multiplier": facts.get("noise_multiplier"),
            "users": facts.get("users"),
            "rows": facts.get("rows_kept", len(train)),
            "delta": None
            if getattr(ranker, "privacy_guarantee_", None) is None
            else ranker.privacy_guarantee_.delta,  # type: ignore[attr-defined]
        }
        rows.append(row)
        reference = rows[0]["test_auc"]
        share = (value - 0.5) / (reference - 0.5)
        row["share_of_gain"] = share
        print(
            f"{args.data} {args.model} eps={eps:<5g} test AUC {value:.4f} share {share:.3f} "
            f"m={row['noise_multiplier']} users={row['users']} rows={row['rows']} "
            f"delta={row['delta']} fit {seconds:.0f}s",
            flush=True,
        )
        if args.out is not None:
            args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                            "rows": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
