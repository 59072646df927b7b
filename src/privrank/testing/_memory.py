"""Peak resident memory of a process tree, for benchmarks that start subprocesses (Ray, Flower,
servers) whose memory a ``getrusage`` of one process does not see."""

from __future__ import annotations

import contextlib
import threading


class PeakTreeMemory:
    """The largest sum of RSS over a process and all its descendants while a ``with`` block runs.

    A daemon thread samples the tree every ``interval`` seconds (psutil), so a peak shorter than
    the interval can be missed. Pages shared between processes count once per process, so the
    figure over-states the tree's footprint (it is an upper bound of what the tree held).

    Args:
        pid: The root process; default this process.
        interval: Seconds between samples.

    Example:
        >>> with PeakTreeMemory() as peak:
        ...     run_the_workload()
        >>> peak.gigabytes
    """

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        self.bytes = 0
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def gigabytes(self) -> float:
        """The peak in GB (10⁹ bytes)."""
        return self.bytes / 1e9

    @property
    def mebibytes(self) -> float:
        """The peak in MiB (2²⁰ bytes)."""
        return self.bytes / 2**20

    def sample(self) -> int:
        """The tree's RSS now, in bytes (0 when the root has exited)."""
        import psutil

        try:
            root = psutil.Process(self._pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for process in tree:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def _run(self) -> None:
        while True:
            self.bytes = max(self.bytes, self.sample())
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakTreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, self.sample())
