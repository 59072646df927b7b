"""Streamed vs in-memory click-model training on a large synthetic ad log: peak RSS, rows/s, AUC.

Every run is its own child process (so its peak resident memory, ``ru_maxrss``, is its own):

- ``stream``: :func:`privrank.workflow.streamed_click_training.train_click_model_streamed`
  (the log read part by part; FM through ``ChunkedFeatureTable``, LightGBM through
  ``lightgbm.Sequence``);
- ``memory`` (the peer, same rows and split): the window read whole (``read_ad_log``), FM fitted
  on the encoded ``FeatureTable`` of all rows, LightGBM on the whole float matrix.

The window is the first ``--rows`` impressions (its last 5 %, at most 200k, validate); the test
part is the last ``--test-rows`` impressions of the log (later than every training row). No
per-user cap (the fits are not private). Prints one JSON line per run and a table with the
stream/memory ratios of peak RSS and rows/s at each size where both ran.

Usage::

    privrank data synth-ads --out /tmp/adlog11m --impressions 11000000
    .venv/bin/python bench/bench_ctr_stream.py --log /tmp/adlog11m --rows 1000000,10000000 \\
        --models lightgbm,fm --modes memory,stream --memory-max-rows 1000000 --trees 20 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _child(args: argparse.Namespace) -> dict[str, object]:
    import pyarrow.parquet as pq

    from privrank.data.ad_log_frames import ad_log_frame
    from privrank.data.ad_log_stream import plan_ad_log_stream
    from privrank.data.synthetic_ads import FEATURE_COLUMNS, log_parts, read_ad_log
    from privrank.metrics.ctr import auc
    from privrank.models import FitOptions
    from privrank.ranking.ctr import create_ranker
    from privrank.ranking.gbdt_click import GBDTClickConfig, GBDTClickModel
    from privrank.workflow.label_dp_training import CATEGORICAL_COLUMNS
    from privrank.workflow.streamed_click_training import peak_rss_mib, train_click_model_streamed

    total = sum(pq.ParquetFile(p).metadata.num_rows for p in log_parts(args.log))
    test_start = total - args.test_rows
    if args.rows > test_start:
        raise SystemExit(f"--rows {args.rows} overlaps the test part (from {test_start})")
    gbdt = GBDTClickConfig(n_estimators=args.trees, num_leaves=63, min_data_in_leaf=200,
                           threads=args.threads)  # fmt: skip
    params = {"epochs": args.epochs, "batch_size": 4096, "embedding_dim": 16}
    out = Path(tempfile.mkdtemp(prefix="bench_ctr_stream_")) / "model"
    started = time.perf_counter()
    if args.mode == "stream":
        result = train_click_model_streamed(
            args.log, out, model=args.model, max_rows=args.rows,
            params=None if args.model == "lightgbm" else params,
            gbdt=gbdt if args.model == "lightgbm" else None, threads=args.threads,
        )  # fmt: skip
        train_rows, fit_seconds, epochs = result.train_rows, result.fit_seconds, result.epochs
        plan_seconds = result.plan_seconds
        fit_peak = result.peak_rss_mib
    else:
        stream = plan_ad_log_stream(args.log, max_rows=args.rows)  # the same split and codes
        n_valid = len(stream.validation["label"])
        plan_started = time.perf_counter()
        table = read_ad_log(args.log, [*FEATURE_COLUMNS, "click"], max_rows=args.rows)
        cut = args.rows - n_valid
        if args.model == "lightgbm":
            columns = {n: table.column(n).to_numpy()[:cut] for n in FEATURE_COLUMNS}
            labels = table.column("click").to_numpy()[:cut]
            del table
            plan_seconds = time.perf_counter() - plan_started
            fit_started = time.perf_counter()
            model = GBDTClickModel(FEATURE_COLUMNS, CATEGORICAL_COLUMNS, gbdt).fit(columns, labels)
            fit_seconds, epochs = time.perf_counter() - fit_started, 1
        else:
            del table
            frame, _ = ad_log_frame(args.log, rows=cut, with_user=False)
            train_t = stream.vocabulary.transform(frame)  # every training row encoded at once
            del frame
            plan_seconds = time.perf_counter() - plan_started
            ranker = create_ranker(args.model, params)
            fit_started = time.perf_counter()
            ranker.fit(train_t, stream.validation_table(), FitOptions(threads=args.threads))
            fit_seconds, epochs = time.perf_counter() - fit_started, len(ranker.history_)
        train_rows = cut
        fit_peak = peak_rss_mib()  # before the test part is read (that read is not training)
    test = read_ad_log(args.log, [*FEATURE_COLUMNS, "click"]).slice(test_start)
    columns = {n: test.column(n).to_numpy() for n in FEATURE_COLUMNS}
    y = test.column("click").to_numpy().astype(np.float64)
    if args.mode == "stream":
        if args.model == "lightgbm":
            p = GBDTClickModel.load(out).predict_ctr(columns)
        else:
            from privrank.ranking.ctr import load_ranker
            from privrank.ranking.ctr_click import CTRClickScorer

            p = CTRClickScorer(load_ranker(out)).predict_ctr(columns)
    elif args.model == "lightgbm":
        p = model.predict_ctr(columns)
    else:
        codes = stream.encoder.encode(columns)
        from privrank.data.features import FeatureTable

        p = ranker.predict_proba(
            FeatureTable(codes, np.zeros((len(y), 0), np.float32), y.astype(np.float32),
                         stream.vocabulary)
        )  # fmt: skip
    return {
        "mode": args.mode, "model": args.model, "rows": args.rows, "train_rows": train_rows,
        "epochs": epochs, "read_seconds": round(plan_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "rows_per_s": round(train_rows * epochs / fit_seconds),
        "test_auc": round(auc(y, p), 4), "peak_rss_mib": round(fit_peak),
        "wall_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--rows", default="1000000")
    parser.add_argument("--models", default="lightgbm,fm")
    parser.add_argument("--modes", default="memory,stream")
    parser.add_argument("--memory-max-rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--trees", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="fm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.rows = int(args.rows)
        print(json.dumps(_child(args)), flush=True)
        return
    runs = []
    for rows in (int(r) for r in args.rows.split(",")):
        for model in args.models.split(","):
            for mode in args.modes.split(","):
                if mode == "memory" and rows > args.memory_max_rows:
                    continue
                command = [sys.executable, __file__, "--child", "--log", str(args.log),
                           "--rows", str(rows), "--model", model, "--mode", mode,
                           "--test-rows", str(args.test_rows), "--trees", str(args.trees),
                           "--epochs", str(args.epochs),
                           "--threads", str(args.threads)]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    continue
                run = json.loads(done.stdout.strip().splitlines()[-1])
                runs.append(run)
                print(json.dumps(run), flush=True)
    print("\n| rows | model | mode | train rows | fit s | rows/s | test AUC | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['rows']:,} | {r['model']} | {r['mode']} | {r['train_rows']:,} | "
              f"{r['fit_seconds']} | {r['rows_per_s']:,} | {r['test_auc']} | "
              f"{r['peak_rss_mib']:,} |")  # fmt: skip
    by = {(r["rows"], r["model"], r["mode"]): r for r in runs}
    for (rows, model, mode), r in by.items():
        peer = by.get((rows, model, "memory"))
        if mode == "stream" and peer is not None:
            print(f"{model} at {rows:,}: stream/memory peak RSS "
                  f"{r['peak_rss_mib'] / peer['peak_rss_mib']:.2f}, rows/s "
                  f"{r['rows_per_s'] / peer['rows_per_s']:.2f}, AUC "
                  f"{r['test_auc'] - peer['test_auc']:+.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
