"""CTR rankers against their peers on one split, in one run: AUC, log loss, ECE, fit time.

Every privrank CTR model (``logistic``, ``fm``, ``deepfm``, ``dcn-v2``, ``finalmlp``) and every
peer (``lightgbm``; deepctr-torch's DeepFM and DCN as ``deepctr-deepfm``, ``deepctr-dcn``) is
fitted on the protocol's train part with the same seed, early-stopped on the validation log loss
and calibrated (isotonic) on the validation part; the test part gives AUC, log loss and ECE before
and after calibration (:mod:`privrank.metrics.ctr`, bootstrap CI of the AUC over test rows).
The last line says whether the best privrank AUC is at least the best peer AUC.

``--budget S`` caps every iterative model's training at the first epoch that ends past S
seconds (``max_seconds``; the same cap for privrank's networks and deepctr-torch's); LightGBM
early-stops on its own. Hyper-parameters are each model's defaults unless ``--params`` overrides
them (JSON: model → parameters); no choice is made on the test part.

Run (frappe re-split)::

    PRIVRANK_DATA_DIR=../shared/data .venv/bin/python bench/bench_ctr.py --protocol frappe \
        --budget 200 --out bench/results/ctr-frappe.json

``--synthetic LOG`` replaces the protocol by a synthetic ad log (``privrank data synth-ads``)
split in time: the first ``--train-rows`` impressions train, the next ``--valid-rows`` validate,
the next ``--test-rows`` test (the split of ``bench_ctr_select.py`` for synthetic logs, so
settings chosen there never saw these test rows).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from privrank.data.ad_log_frames import ad_log_frame
from privrank.data.features import CTRFrame
from privrank.metrics.ctr import ctr_metrics
from privrank.models import FitOptions
from privrank.ranking.ctr import create_ranker
from privrank.workflow.ctr_protocols import CTR_PROTOCOLS, prepare_ctr

OURS = ["logistic", "fm", "deepfm", "dcn-v2", "finalmlp"]
PEERS = ["lightgbm", "deepctr-deepfm", "deepctr-dcn"]
ITERATIVE = {"logistic", "fm", "deepfm", "dcn-v2", "finalmlp", "deepctr-deepfm", "deepctr-dcn"}


def _parts(args: argparse.Namespace) -> tuple[CTRFrame, CTRFrame, CTRFrame]:
    """``(train, validation, test)`` of the protocol, or of the synthetic log split in time."""
    if args.synthetic is None:
        prepared = prepare_ctr(CTR_PROTOCOLS[args.protocol])
        return prepared.train, prepared.validation, prepared.test
    starts = (0, args.train_rows, args.train_rows + args.valid_rows)
    sizes = (args.train_rows, args.valid_rows, args.test_rows)
    frames = [
        ad_log_frame(args.synthetic, start=a, rows=n)[0] for a, n in zip(starts, sizes, strict=True)
    ]
    return frames[0], frames[1], frames[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="frappe", choices=sorted(CTR_PROTOCOLS))
    parser.add_argument("--models", default=",".join(OURS + PEERS))
    parser.add_argument("--budget", type=float, default=None, help="seconds per iterative fit")
    parser.add_argument("--params", default="{}", help="JSON: model -> parameters")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--synthetic", default=None, help="an ad log instead of --protocol")
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--valid-rows", type=int, default=50_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    args = parser.parse_args()
    overrides = json.loads(args.params)
    parts = _parts(args)
    names = ("train", "validation", "test")
    counts = {name: len(part) for name, part in zip(names, parts, strict=True)}
    print(f"{args.synthetic or args.protocol}: {counts}", flush=True)
    train_part, valid_part, test_part = parts
    y = test_part.labels
    rows = []
    for name in args.models.split(","):
        params = dict(overrides.get(name, {}))
        if args.budget is not None and name in ITERATIVE:
            params.setdefault("max_seconds", args.budget)
        ranker = create_ranker(name, params)
        started = time.perf_counter()
        ranker.fit(train_part, valid_part, FitOptions(seed=args.seed, threads=args.threads))
        fit_s = time.perf_counter() - started
        test = ranker.encode(test_part)
        raw = ranker.predict_raw(test)
        assert ranker.calibrator_ is not None
        calibrated = ranker.calibrator_.apply(raw)
        after = ctr_metrics(y, calibrated, n_resamples=args.resamples, seed=0)
        before = ctr_metrics(y, raw, n_resamples=args.resamples, seed=0)
        row = {
            "model": name,
            "side": "privrank" if name in OURS else "peer",
            "params": ranker.config.model_dump(mode="json"),
            "epochs": len(ranker.history_),
            "fit_s": fit_s,
            "auc": after["auc"].to_dict(),
            "auc_raw": before["auc"].estimate,
            "log_loss": after["log_loss"].estimate,
            "log_loss_raw": before["log_loss"].estimate,
            "ece": after["ece"].estimate,
            "ece_raw": before["ece"].estimate,
            "best_val_log_loss": min(h["val_log_loss"] for h in ranker.history_),
        }
        rows.append(row)
        a = after["auc"]
        print(
            f"{name:15s} AUC {a.estimate:.4f} [{a.low:.4f}, {a.high:.4f}]"
            f" (raw {row['auc_raw']:.4f})"
            f"  logloss {row['log_loss']:.4f} (raw {row['log_loss_raw']:.4f})"
            f"  ECE {row['ece']:.4f} (raw {row['ece_raw']:.4f})  epochs {row['epochs']}"
            f"  fit {fit_s:.0f} s",
            flush=True,
        )
    ours = [r for r in rows if r["side"] == "privrank"]
    peers = [r for r in rows if r["side"] == "peer"]
    verdict = None
    if ours and peers:
        best_ours = max(ours, key=lambda r: r["auc"]["estimate"])
        best_peer = max(peers, key=lambda r: r["auc"]["estimate"])
        verdict = best_ours["auc"]["estimate"] >= best_peer["auc"]["estimate"]
        print(
            f"best privrank AUC {best_ours['auc']['estimate']:.4f} ({best_ours['model']}) >= "
            f"best peer AUC {best_peer['auc']['estimate']:.4f} ({best_peer['model']}): "
            f"{'yes' if verdict else 'NO'}",
            flush=True,
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "command": " ".join(sys.argv),
                    "platform": platform.platform(),
                    "protocol": args.synthetic or args.protocol,
                    "counts": counts,
                    "rows": rows,
                    "best_privrank_auc_at_least_best_peer": verdict,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
