"""PeakTreeMemory sees the memory of a child process, which getrusage of this process does not."""

from __future__ import annotations

import subprocess
import sys

from privrank.testing import PeakTreeMemory

_HOLD_300_MB = (
    "import sys, time; block = bytearray(300 * 2**20); block[::4096] = b'x' * len(block[::4096]); "
    "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(1.0)"
)


def test_peak_includes_a_child_process() -> None:
    with PeakTreeMemory(interval=0.05) as peak:
        child = subprocess.Popen([sys.executable, "-c", _HOLD_300_MB], stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        child.wait(timeout=30)
    alone = PeakTreeMemory().sample()
    assert peak.bytes >= alone + 250 * 2**20


def test_a_root_that_has_exited_samples_zero() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert PeakTreeMemory(child.pid).sample() == 0
