"""What the import's byte progress costs: ``read_interactions`` with and without it.

``privrank data import`` passes a progress callback to
:func:`privrank.data.readers.read_interactions`, which then reads the file through a counting
wrapper (:class:`privrank.data.readers._fast._Counted`) and reports after every parsed block.
This measures three contenders on the same MovieLens-20M-layout ``ratings.csv`` (made by the
synthetic generator, as ``bench_import.py`` does), each in a fresh Python process, alternating
with the order rotating every round:

- ``plain``: ``read_interactions(path, "ml-csv")``, no progress (the library default);
- ``callback``: the same with a callback that keeps the last ``(done, total)``;
- ``bar``: the same feeding the CLI's Rich progress bar (:func:`privrank.cli._console.progress`,
  drawn to a console on ``/dev/null``), as ``privrank data import`` does.

It prints the medians and the ratios ``plain / callback`` and ``plain / bar`` of wall and CPU
time (1.0 = no cost; below 1 = slower with progress).

Usage::

    .venv/bin/python bench/bench_import_progress.py --rows 5000000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_import import _cpu_seconds, make_file

CONTENDERS = ("plain", "callback", "bar")


def child(contender: str, path: str) -> dict:
    """One import in this fresh process."""
    from privrank.data.readers import read_interactions

    seen: list[tuple[int, int]] = []
    cpu, started = _cpu_seconds(), time.perf_counter()
    if contender == "plain":
        result = read_interactions(path, "ml-csv")
    elif contender == "callback":
        result = read_interactions(path, "ml-csv", progress=lambda d, t: seen.append((d, t)))
    else:
        import rich.console

        from privrank.cli import _console

        with open("/dev/null", "w") as sink:
            _console.make_console = lambda **kw: rich.console.Console(
                file=sink, force_terminal=True
            )
            with _console.progress("import", "reading", unit="bytes") as bar:
                result = read_interactions(path, "ml-csv", progress=bar.update)
    seconds = time.perf_counter() - started
    return {
        "contender": contender,
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu,
        "rows": len(result.interactions),
        "updates": len(seen),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("CONTENDER", "PATH"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="privrank-import-progress-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path, _ = make_file(args.rows, workdir)
    with path.open("rb") as handle:  # into the page cache for every contender alike
        while handle.read(64 << 20):
            pass
    results = []
    for round_ in range(args.runs):
        order = CONTENDERS[round_ % 3 :] + CONTENDERS[: round_ % 3]
        for contender in order:
            out = subprocess.run(
                [sys.executable, __file__, "--child", contender, str(path)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"  round {round_} {contender:8s} {result['seconds']:6.2f} s "
                  f"(cpu {result['cpu_seconds']:.2f} s)", flush=True)  # fmt: skip
    medians = {
        c: {
            key: statistics.median(r[key] for r in results if r["contender"] == c)
            for key in ("seconds", "cpu_seconds")
        }
        for c in CONTENDERS
    }
    rows = results[0]["rows"]
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {rows:,} rows, "
          f"{path.stat().st_size / 2**20:.0f} MiB, {args.runs} rounds")  # fmt: skip
    for c in CONTENDERS:
        print(f"{c:8s} wall {medians[c]['seconds']:.2f} s  cpu {medians[c]['cpu_seconds']:.2f} s")
    for c in ("callback", "bar"):
        wall = medians["plain"]["seconds"] / medians[c]["seconds"]
        cpu = medians["plain"]["cpu_seconds"] / medians[c]["cpu_seconds"]
        print(f"plain / {c}: wall {wall:.3f}, cpu {cpu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
