"""Ads serving: p99 of ``POST /v1/ads/rank`` at 500 requests/s with 100 candidate ads each.

A real ``privrank serve --ads-model`` subprocess (``bench_serving.Server``: a free port on
127.0.0.1, a temporary ``PRIVRANK_HOME``, a ``read`` key made with ``privrank keys create``,
rate limit off) serves a LightGBM click model trained here on the first ``--train-rows`` rows of
a synthetic ad log (``privrank data synth-ads``; written into the workdir when ``--log`` is not
given). The open-loop generator of the serving bench (``bench/serving/loadgen.py``, its own
process, latency from each request's scheduled time) sends prepared bodies: a context drawn
from the log and ``--candidates`` ads drawn from the log's ads with log-normal bids, second
price, 3 slots, a reserve.

In the same run the bare in-process answer (:func:`privrank.serving.ads_route.rank_ads`:
pCTR of the candidates, auction, decision log) is timed for the same bodies, and the ratio of
end-to-end p99 to the bare p99 is printed. Target: p99 ≤ 20 ms at 500 requests/s.

``--scorer fm`` (or ``label-sums``) serves a privrank FM CTR ranker (``ranking/ctr``, its
calibrated output through :class:`~privrank.ranking.ctr_click.CTRClickScorer`; trained here on
the first ``min(--train-rows, 200k)`` rows, validation the next 50k) or the label-sums logistic
model (fitted here at ε = inf: its serving cost does not depend on ε) instead of LightGBM. The
bare in-process answer is then timed for LightGBM **and** the chosen scorer on the same bodies,
wall and CPU (``time.process_time``) per request, and their ratio printed; ``--bare-only`` stops
there (no server, no load generator: the CPU comparison a loaded machine can still make).

Usage::

    .venv/bin/python bench/bench_ads_serving.py --workdir /tmp/ads-serving --repeats 3
    .venv/bin/python bench/bench_ads_serving.py --workdir /tmp/ads-serving --scorer fm --bare-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import create_key, loadavg, log, serving
from privrank.data.synthetic_ads import (
    FEATURE_COLUMNS,
    AdLogConfig,
    read_ad_log,
    write_ad_log,
)


def prepare(workdir: Path, log_dir: Path | None, train_rows: int, trees: int) -> dict:
    from privrank.data.synthetic import SyntheticConfig, generate
    from privrank.models import create_model
    from privrank.ranking.gbdt_click import GBDTClickConfig, GBDTClickModel
    from privrank.workflow.label_dp_training import CATEGORICAL_COLUMNS

    info_path = workdir / "setup.json"
    if info_path.is_file():
        return dict(json.loads(info_path.read_text()))
    workdir.mkdir(parents=True, exist_ok=True)
    if log_dir is None:
        log_dir = write_ad_log(AdLogConfig(n_impressions=train_rows + 100_000), workdir / "log")
    table = read_ad_log(log_dir, [*FEATURE_COLUMNS, "click"], max_rows=train_rows)
    started = time.perf_counter()
    model = GBDTClickModel(
        FEATURE_COLUMNS, CATEGORICAL_COLUMNS, GBDTClickConfig(n_estimators=trees, num_leaves=15)
    ).fit(
        {name: table.column(name).to_numpy() for name in FEATURE_COLUMNS},
        table.column("click").to_numpy(),
    )
    model.save(workdir / "click-model")
    log(f"trained the click model ({trees} trees) in {time.perf_counter() - started:.1f}s")
    recommender = create_model("most-popular", {}).fit(
        generate(SyntheticConfig(n_users=500, n_items=300, n_interactions=5_000, seed=0))
    )
    recommender.save(workdir / "recommender")
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    info = {
        "home": str(home),
        "log": str(log_dir),
        "click_model": str(workdir / "click-model"),
        "recommender": str(workdir / "recommender"),
        "keys": {"read": create_key(home, "read")},
        "trees": trees,
        "train_rows": train_rows,
    }
    info_path.write_text(json.dumps(info, indent=2))
    return info


def scorer_dir(info: dict, workdir: Path, scorer: str) -> str:
    """The model directory serving ``scorer`` (trained here on first use, then reused)."""
    if scorer == "lightgbm":
        return str(info["click_model"])
    out = workdir / f"{scorer}-model"
    if out.is_dir():
        return str(out)
    train_rows = min(int(info["train_rows"]), 200_000)
    started = time.perf_counter()
    if scorer == "fm":
        from privrank.data.ad_log_frames import ad_log_frame
        from privrank.models import FitOptions
        from privrank.ranking.ctr import create_ranker

        train, _ = ad_log_frame(info["log"], start=0, rows=train_rows, with_user=False)
        valid, _ = ad_log_frame(info["log"], start=train_rows, rows=50_000, with_user=False)
        # one network, as `privrank ads train` serves (streamed and DP-SGD fits train one);
        # a served seed ensemble of N costs N forward passes a request
        ranker = create_ranker("fm", {"max_seconds": 120.0, "ensemble": 1})
        ranker.fit(train, valid, FitOptions(seed=0, threads=1))
        ranker.save(out)
    elif scorer == "label-sums":
        from privrank.ranking.label_sums_logistic import LabelSumsConfig, LabelSumsLogistic
        from privrank.workflow.label_sums_training import DEFAULT_SUMS_FIELDS

        table = read_ad_log(info["log"], [*DEFAULT_SUMS_FIELDS, "click"], max_rows=train_rows)
        columns = {name: table.column(name).to_numpy() for name in DEFAULT_SUMS_FIELDS}
        model = LabelSumsLogistic(DEFAULT_SUMS_FIELDS, LabelSumsConfig(min_count=50, l2=3.0))
        labels = table.column("click").to_numpy().astype(float)
        model.fit(columns, labels, float("inf"), np.random.default_rng(0)).save(out)
    else:
        raise SystemExit(f"--scorer: got {scorer!r}; expected lightgbm, fm or label-sums")
    seconds = time.perf_counter() - started
    log(f"trained the {scorer} scorer on {train_rows:,} rows in {seconds:.1f}s")
    return str(out)


def make_bodies(info: dict, n: int, candidates: int, seed: int) -> list[str]:
    """Request bodies: a context from the log, ``candidates`` distinct ads with bids."""
    rng = np.random.default_rng(seed)
    entities = pq.read_table(Path(info["log"]) / "entities.parquet").to_pandas()
    rows = read_ad_log(info["log"], ["user_segment", "context_id", "device", "hour"], 50_000)
    contexts = rows.to_pandas()
    bodies = []
    for _ in range(n):
        row = contexts.iloc[int(rng.integers(len(contexts)))]
        ads = entities.iloc[rng.choice(len(entities), size=candidates, replace=False)]
        bids = np.round(rng.lognormal(0.0, 0.5, candidates), 3)
        bodies.append(
            json.dumps(
                {
                    "context": {
                        k: int(row[k]) for k in ("user_segment", "context_id", "device", "hour")
                    },
                    "candidates": [
                        {
                            "ad_id": int(a.ad_id),
                            "ad_category": int(a.ad_category),
                            "campaign_id": int(a.campaign_id),
                            "advertiser_id": int(a.advertiser_id),
                            "bid": float(b),
                        }
                        for a, b in zip(ads.itertuples(), bids, strict=True)
                    ],
                    "slots": 3,
                    "reserve": 5.0,
                    "rule": "second",
                }
            )
        )
    return bodies


def bare(model_dir: str, bodies: list[str], rounds: int = 2) -> dict:
    """The in-process answer alone (parse excluded), timed per request: wall percentiles, and
    the mean CPU time per request (``time.process_time`` over all requests of a round)."""
    from privrank.serving.ads_route import AdsRankRequest, load_click_scorer, rank_ads

    scorer, checksum = load_click_scorer(Path(model_dir))
    parsed = [AdsRankRequest.model_validate_json(b) for b in bodies[:1000]]
    rank_ads(scorer, checksum, parsed[0])  # first-call set-up (threads, caches) not counted
    times: list[float] = []
    cpu = 0.0
    for _ in range(rounds):
        cpu_started = time.process_time()
        for request in parsed:
            started = time.perf_counter()
            rank_ads(scorer, checksum, request)
            times.append(time.perf_counter() - started)
        cpu += time.process_time() - cpu_started
    times.sort()
    return {
        "p50_ms": 1000 * times[len(times) // 2],
        "p99_ms": 1000 * times[int(0.99 * len(times))],
        "mean_ms": 1000 * sum(times) / len(times),
        "cpu_ms_per_request": 1000 * cpu / len(times),
        "n": len(times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/privrank-bench-ads-serving"))
    parser.add_argument("--log", type=Path, default=None, help="a synthetic ad log to train on")
    parser.add_argument("--train-rows", type=int, default=500_000)
    parser.add_argument("--trees", type=int, default=150)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--scorer", default="lightgbm", choices=["lightgbm", "fm", "label-sums"])
    parser.add_argument("--bare-only", action="store_true", help="in-process timing only")
    args = parser.parse_args(argv)
    info = prepare(args.workdir, args.log, args.train_rows, args.trees)
    served = scorer_dir(info, args.workdir, args.scorer)
    bodies = make_bodies(info, 4096, args.candidates, seed=0)
    bodies_file = args.workdir / f"bodies-{args.candidates}.jsonl"
    bodies_file.write_text("\n".join(bodies) + "\n")
    reference = bare(served, bodies)
    log(
        f"bare in-process answer ({args.scorer}): p50 {reference['p50_ms']:.3f} ms, p99 "
        f"{reference['p99_ms']:.3f} ms, CPU {reference['cpu_ms_per_request']:.3f} ms a request"
    )
    lightgbm = reference if args.scorer == "lightgbm" else bare(info["click_model"], bodies)
    if args.scorer != "lightgbm":
        log(
            f"bare in-process answer (lightgbm): p50 {lightgbm['p50_ms']:.3f} ms, p99 "
            f"{lightgbm['p99_ms']:.3f} ms, CPU {lightgbm['cpu_ms_per_request']:.3f} ms a request"
        )
        print(
            f"{args.scorer} / lightgbm, in process, {args.candidates} candidates: CPU a request "
            f"{reference['cpu_ms_per_request'] / lightgbm['cpu_ms_per_request']:.2f}x, p50 "
            f"{reference['p50_ms'] / lightgbm['p50_ms']:.2f}x, p99 "
            f"{reference['p99_ms'] / lightgbm['p99_ms']:.2f}x (load {loadavg()})"
        )
    if args.bare_only:
        if args.out:
            args.out.write_text(
                json.dumps(
                    {"bare": reference, "bare_lightgbm": lightgbm, "argv": sys.argv}, indent=2
                )
            )
        return 0
    runs = []
    server_args = [
        "--model",
        info["recommender"],
        "--ads-model",
        served,
        "--no-console",
    ]
    with serving(info, server_args, args.workers, args.workdir / "server.log") as server:

        def load(rate: float, duration: float, out: Path) -> dict:
            command = [
                sys.executable,
                str(Path(__file__).parent / "serving" / "loadgen.py"),
                "--port",
                str(server.port),
                "--key",
                info["keys"]["read"],
                "--path",
                "/v1/ads/rank",
                "--rate",
                str(rate),
                "--duration",
                str(duration),
                "--bodies",
                str(bodies_file),
                "--out",
                str(out),
            ]
            before = loadavg()
            subprocess.run(command, check=True, timeout=duration * 4 + 60)
            result = dict(json.loads(out.read_text()))
            result["loadavg_before"], result["loadavg_after"] = before, loadavg()
            return result

        load(50, 5, args.workdir / "warmup.json")  # every worker's first LightGBM calls
        for repeat in range(args.repeats):
            before = loadavg()
            result = load(args.rate, args.duration, args.workdir / f"load-{repeat}.json")
            runs.append(result)
            log(
                f"run {repeat + 1}: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} "
                f"ms, ok {result['ok']}/{result['sent']}, statuses {result['statuses']}, "
                f"errors {result['errors']}, load {before} -> {result['loadavg_after']}"
            )
    p99 = statistics.median(r["p99_ms"] for r in runs)
    p50 = statistics.median(r["p50_ms"] for r in runs)
    print(
        f"POST /v1/ads/rank, {args.candidates} candidates, {args.rate:g} req/s offered for "
        f"{args.duration:g} s, {args.workers} workers, {args.repeats} runs"
    )
    print(
        f"median p50 {p50:.2f} ms, median p99 {p99:.2f} ms (runs: "
        f"{[round(r['p99_ms'], 2) for r in runs]}); failed {[r['failed'] for r in runs]}"
    )
    print(
        f"bare in-process p50 {reference['p50_ms']:.3f} ms, p99 {reference['p99_ms']:.3f} ms; "
        f"end-to-end p99 / bare p99 = {p99 / reference['p99_ms']:.1f}"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {"runs": runs, "bare": reference, "bare_lightgbm": lightgbm, "argv": sys.argv},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
