"""What a device's code costs to import: ``privrank.federated.flower.devices`` (everything of
privrank that fedmf's Flower ClientApp imports; the ClientApp itself adds flwr, which the main
environment does not have), in a fresh interpreter, this checkout against another source tree
(``--before-src``, e.g. a worktree of the commit before lazy imports), run alternately in the
same run.

For each arm: the median wall time of ``--repeats`` fresh ``python -c "import …"`` runs, the
heavy modules loaded (torch, opacus, sqlalchemy, …) and the median peak resident memory of the
child (its own ``ru_maxrss``). The ratio is before / after.

Usage::

    git worktree add /tmp/before c1d8219
    .venv/bin/python bench/bench_device_import.py --before-src /tmp/before/src --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODULE = "privrank.federated.flower.devices"
HEAVY = ("torch", "opacus", "lightgbm", "implicit", "faiss", "sqlalchemy", "ray", "fastapi")


def one_run(src: Path) -> tuple[float, list[str], float]:
    """One fresh interpreter: (wall seconds, heavy modules loaded, its peak RSS in MB)."""
    code = (
        f"import resource, sys, {MODULE}; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules)); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - started
    lines = done.stdout.strip().splitlines()
    heavy = [m for m in lines[0].split(",") if m] if len(lines) > 1 else []
    return seconds, heavy, float(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-src", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    after_src = Path(__file__).resolve().parents[1] / "src"
    arms = {"before": args.before_src.resolve(), "after": after_src}
    times: dict[str, list[float]] = {name: [] for name in arms}
    peaks: dict[str, list[float]] = {name: [] for name in arms}
    heavy: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, src in arms.items():  # alternate, so load changes hit both arms
            seconds, loaded, peak = one_run(src)
            times[name].append(seconds)
            peaks[name].append(peak)
            heavy[name] = loaded
    result = {
        "module": MODULE,
        "repeats": args.repeats,
        "median_seconds": {name: statistics.median(v) for name, v in times.items()},
        "all_seconds": times,
        "heavy_modules": heavy,
        "median_peak_rss_mb": {name: statistics.median(v) for name, v in peaks.items()},
        "ratio_before_over_after": statistics.median(times["before"])
        / statistics.median(times["after"]),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
