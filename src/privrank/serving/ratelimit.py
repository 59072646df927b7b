"""Per-key token-bucket rate limits.

Each key owns a bucket of ``burst`` tokens that refills at ``rate`` tokens per second; a request
takes one token, and a request that finds the bucket empty is refused with the number of seconds
until a token is back (the ``Retry-After`` of the 429 answer). Buckets live in the memory of one
server process: with ``--workers N`` each worker enforces the limit on its own share of requests.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets by key name.

    Args:
        rate: Tokens added per second (sustained requests per second); ``0`` disables limiting.
        burst: Bucket size (requests allowed at once).
        clock: Monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether any limit is enforced."""
        return self.rate > 0

    def acquire(self, key: str) -> float:
        """Take a token for ``key``.

        Returns:
            ``0.0`` when the request may proceed, else the seconds until a token is available.
        """
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens = self._refilled(key, now)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _refilled(self, key: str, now: float) -> float:
        """The tokens ``key``'s bucket holds at ``now`` (a new bucket is full); call under the
        lock."""
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def wait(self, key: str) -> float:
        """The seconds until ``key`` has a token (``0.0`` when it has one now), without taking
        it."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens = self._refilled(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def forget_full(self, max_buckets: int) -> None:
        """Drop the buckets that have refilled when more than ``max_buckets`` are kept (bounds
        the memory of limits keyed by client address)."""
        if len(self._buckets) <= max_buckets:
            return
        now = self._clock()
        with self._lock:
            self._buckets = {
                key: (tokens, last)
                for key, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate < self.burst
            }

    def refund(self, key: str) -> None:
        """Give back the token :meth:`acquire` took for ``key`` (up to the burst)."""
        if not self.enabled:
            return
        with self._lock:
            if key in self._buckets:
                tokens, last = self._buckets[key]
                self._buckets[key] = (min(float(self.burst), tokens + 1.0), last)

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The ``Retry-After`` header value (whole seconds, at least 1) for a wait."""
        return str(max(1, math.ceil(wait_s)))
