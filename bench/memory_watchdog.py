"""Memory watchdog for benches that start many processes on a shared machine.

Polls ``MemAvailable`` in ``/proc/meminfo`` every ``--interval`` seconds. When it drops below
``--min-available-gb``, it freezes (SIGSTOP) and then kills (SIGKILL) the watched process tree:
the process group ``--pgid`` (start the bench with ``setsid``), every descendant of that group's
leader, and every process group those descendants lead or belong to (``privrank federated
serve`` starts the SuperLink and each SuperNode in its own session, so killing the bench's group
alone would leave them running). It logs each poll's minimum and what it did, and exits when the
watched group is gone.

Usage::

    setsid nice -n 10 .venv/bin/python bench/bench_flower_deployment.py ... > bench.log 2>&1 &
    .venv/bin/python bench/memory_watchdog.py --pgid $! --min-available-gb 7 --log wd.log &
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from pathlib import Path

import psutil


def mem_available() -> int:
    """``MemAvailable`` in bytes."""
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def watched(pgid: int) -> tuple[set[int], set[int]]:
    """The processes of group ``pgid`` and their descendants, and the groups they are in."""
    pids: set[int] = set()
    for process in psutil.process_iter(["pid"]):
        with contextlib.suppress(OSError):
            if os.getpgid(process.pid) == pgid:
                pids.add(process.pid)
                with contextlib.suppress(psutil.Error):
                    pids.update(c.pid for c in process.children(recursive=True))
    groups = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    return pids, groups


def kill_all(pids: set[int], groups: set[int], log) -> None:
    me = os.getpgid(0)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for group in sorted(groups - {me}):
            with contextlib.suppress(OSError):
                os.killpg(group, sig)
        for pid in sorted(pids - {os.getpid()}):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
    log(f"killed {len(pids)} process(es) in {len(groups)} group(s): {sorted(groups)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pgid", type=int, required=True)
    parser.add_argument("--min-available-gb", type=float, default=7.0)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    floor = int(args.min_available_gb * 1e9)

    def log(text: str) -> None:
        with args.log.open("a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    log(f"watching group {args.pgid}: kill below {args.min_available_gb} GB MemAvailable")
    lowest = mem_available()
    last_report = time.monotonic()
    pids, groups = watched(args.pgid)
    tick = 0
    while pids:
        available = mem_available()
        lowest = min(lowest, available)
        if available < floor:
            pids |= watched(args.pgid)[0]
            log(f"MemAvailable {available / 1e9:.2f} GB < {args.min_available_gb} GB: killing")
            kill_all(pids, groups, log)
            return
        if tick % 4 == 0:  # the tree every 2 s: cheaper than every poll
            pids, seen = watched(args.pgid)
            groups = (groups | seen) if pids else groups
        if time.monotonic() - last_report > 30:
            log(f"alive: {len(pids)} process(es), lowest MemAvailable {lowest / 1e9:.2f} GB")
            last_report = time.monotonic()
        tick += 1
        time.sleep(args.interval)
    log(f"group {args.pgid} gone; lowest MemAvailable {lowest / 1e9:.2f} GB; exiting")


if __name__ == "__main__":
    main()
