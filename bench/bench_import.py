"""Import benchmark: privrank's ratings.csv import against a bare ``pyarrow.csv.read_csv``.

The target (issue 2): importing a 20 M-row ratings CSV (MovieLens-20M layout, made by the
synthetic generator) runs at >= 50% of the throughput of a bare ``pyarrow.csv.read_csv`` of the
same file measured in the same run, with peak memory <= 3x the size of the resulting Arrow
columns.

Each measurement runs in a fresh Python process (so peak RSS is that one operation's, from
``getrusage`` in the child); the two contenders alternate, their order flipping every round,
and the medians of ``--runs`` rounds are reported. The file is read once beforehand so both
find it in the page cache.

Usage::

    .venv/bin/python bench/bench_import.py --rows 20000000 --runs 3
    .venv/bin/python bench/bench_import.py --rows 200000 --runs 3     # a quick check
    .venv/bin/python bench/bench_import.py --file ratings.csv         # an existing file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

CONTENDERS = ("pyarrow", "privrank")
THROUGHPUT_TARGET = 0.5
MEMORY_TARGET = 3.0


def _rss_now() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(contender: str, path: str) -> dict:
    """Run one import in this (fresh) process and measure it."""
    if contender == "pyarrow":
        import pyarrow.csv as pacsv

        baseline = _rss_now()
        cpu = _cpu_seconds()
        start = time.perf_counter()
        table = pacsv.read_csv(path)
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu
        rows, column_bytes = table.num_rows, table.nbytes
    else:
        from privrank.data.readers import read_interactions

        baseline = _rss_now()
        cpu = _cpu_seconds()
        start = time.perf_counter()
        result = read_interactions(path, "ml-csv")
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu
        data = result.interactions
        rows = len(data)
        column_bytes = data.table.nbytes + data.user_ids.nbytes + data.item_ids.nbytes
    return {
        "contender": contender,
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss": _peak_rss(),
        "baseline_rss": baseline,
        "column_bytes": column_bytes,
    }


def make_file(rows: int, directory: Path) -> tuple[Path, float | None]:
    """The synthetic ratings.csv of ``rows`` rows (generated once, then reused)."""
    from privrank.data.synthetic import SyntheticConfig, write_ratings_csv

    path = directory / f"ratings-{rows}.csv"
    if path.exists():
        return path, None
    # The shape of MovieLens-20M: ~144 ratings per user, ~27 k movies.
    config = SyntheticConfig(
        n_users=max(1, rows // 144),
        n_items=max(100, min(27_000, rows // 100)),
        n_interactions=rows,
        seed=0,
    )
    start = time.perf_counter()
    write_ratings_csv(config, path)
    return path, time.perf_counter() - start


def measure(path: Path, runs: int) -> list[dict]:
    """Alternate the contenders in fresh processes, ``runs`` rounds."""
    results: list[dict] = []
    for round_ in range(runs):
        order = CONTENDERS if round_ % 2 == 0 else CONTENDERS[::-1]
        for contender in order:
            out = subprocess.run(
                [sys.executable, __file__, "--child", contender, str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["round"] = round_
            result["load_average"] = os.getloadavg()[0]
            results.append(result)
            print(
                f"  round {round_} {contender:9s} {result['seconds']:7.2f} s "
                f"(CPU {result['cpu_seconds']:6.2f} s)  "
                f"{result['rows'] / result['seconds'] / 1e6:6.2f} M rows/s  "
                f"peak RSS {result['peak_rss'] / 2**20:7.0f} MiB",
                flush=True,
            )
    return results


def summarise(results: list[dict], path: Path) -> dict:
    """Medians per contender, the throughput ratio and the memory ratio."""
    summary: dict = {"file": str(path), "file_bytes": path.stat().st_size}
    for contender in CONTENDERS:
        mine = [r for r in results if r["contender"] == contender]
        rows = mine[0]["rows"]
        summary[contender] = {
            "rows": rows,
            "runs": len(mine),
            "median_seconds": statistics.median(r["seconds"] for r in mine),
            "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in mine),
            "median_rows_per_s": statistics.median(r["rows"] / r["seconds"] for r in mine),
            "median_peak_rss": statistics.median(r["peak_rss"] for r in mine),
            "median_baseline_rss": statistics.median(r["baseline_rss"] for r in mine),
            "column_bytes": mine[0]["column_bytes"],
        }
    ours, bare = summary["privrank"], summary["pyarrow"]
    if ours["rows"] != bare["rows"]:
        raise SystemExit(f"row counts differ: privrank {ours['rows']}, pyarrow {bare['rows']}")
    # Per round, so that both sides of each ratio saw the same machine load.
    per_round = []
    for round_ in sorted({r["round"] for r in results}):
        pair = {r["contender"]: r for r in results if r["round"] == round_}
        per_round.append(pair["pyarrow"]["seconds"] / pair["privrank"]["seconds"])
    summary["throughput_ratio"] = ours["median_rows_per_s"] / bare["median_rows_per_s"]
    summary["throughput_ratio_per_round"] = per_round
    summary["memory_ratio"] = ours["median_peak_rss"] / ours["column_bytes"]
    summary["memory_ratio_above_baseline"] = (
        ours["median_peak_rss"] - ours["median_baseline_rss"]
    ) / ours["column_bytes"]
    summary["load_average"] = [r["load_average"] for r in results]
    summary["throughput_ok"] = summary["throughput_ratio"] >= THROUGHPUT_TARGET
    summary["memory_ok"] = summary["memory_ratio"] <= MEMORY_TARGET
    return summary


def markdown(summary: dict, command: str, generated: float | None) -> str:
    """The result as the rows of BENCHMARKS.md's import section."""
    ours, bare = summary["privrank"], summary["pyarrow"]
    mib = 2**20
    lines = [
        f"- command: `{command}`",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; machine: "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}; 1-min load average during the runs "
        f"{min(summary['load_average']):.1f} to {max(summary['load_average']):.1f} (the machine "
        "is shared)",
        f"- file: {ours['rows']:,} rows, {summary['file_bytes'] / mib:,.0f} MiB"
        + ("" if generated is None else f" (generated in {generated:.0f} s)"),
        "",
        "| | median time | median CPU time | rows/s | peak RSS |",
        "|---|---|---|---|---|",
        f"| bare `pyarrow.csv.read_csv` | {bare['median_seconds']:.2f} s | "
        f"{bare['median_cpu_seconds']:.2f} s | {bare['median_rows_per_s'] / 1e6:.2f} M | "
        f"{bare['median_peak_rss'] / mib:,.0f} MiB |",
        f"| `read_interactions(..., 'ml-csv')` | {ours['median_seconds']:.2f} s | "
        f"{ours['median_cpu_seconds']:.2f} s | {ours['median_rows_per_s'] / 1e6:.2f} M | "
        f"{ours['median_peak_rss'] / mib:,.0f} MiB |",
        "",
        f"- throughput ratio (privrank / pyarrow, medians): **{summary['throughput_ratio']:.2f}**"
        f" (target >= {THROUGHPUT_TARGET}; per round: "
        + ", ".join(f"{r:.2f}" for r in summary["throughput_ratio_per_round"])
        + ")",
        f"- resulting Arrow columns: {ours['column_bytes'] / mib:,.0f} MiB; peak RSS / columns: "
        f"**{summary['memory_ratio']:.2f}x** (target <= {MEMORY_TARGET}x; "
        f"{summary['memory_ratio_above_baseline']:.2f}x counting only memory above the "
        f"{ours['median_baseline_rss'] / mib:.0f} MiB of the interpreter and imports)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows of the synthetic file")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--file", type=Path, help="benchmark this ml-csv file instead")
    parser.add_argument("--workdir", type=Path, help="where the synthetic file is kept")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=2, metavar=("CONTENDER", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    generated = None
    if args.file is not None:
        path = args.file
    else:
        workdir = args.workdir or Path(tempfile.gettempdir()) / "privrank-bench"
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"file: synthetic, {args.rows:,} rows in {workdir}", flush=True)
        path, generated = make_file(args.rows, workdir)
    with path.open("rb") as handle:  # into the page cache, for both contenders alike
        while handle.read(1 << 24):
            pass
    results = measure(path, args.runs)
    summary = summarise(results, path)
    summary["generated_seconds"] = generated
    summary["results"] = results
    command = "python bench/bench_import.py " + " ".join(argv or sys.argv[1:])
    print()
    print(markdown(summary, command.strip(), generated))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["throughput_ok"] and summary["memory_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
