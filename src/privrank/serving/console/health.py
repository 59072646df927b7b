"""Serving health from the app's own Prometheus metrics: request rate and latency quantiles.

The console reads the counters and the latency histogram of
:class:`~privrank.serving.metrics.ServingMetrics` (``privrank_http_requests``,
``privrank_http_request_duration_seconds``) straight from their registry, so the numbers are
the ones ``GET /metrics`` exports, for this server process (with ``--workers N`` each worker
keeps its own).

**Quantiles** are estimated from the histogram's buckets the way Prometheus's
``histogram_quantile`` does: with cumulative bucket counts :math:`c_1 \\le \\dots \\le c_B` at
upper bounds :math:`b_1 < \\dots < b_B` (the last is :math:`+\\infty`) and :math:`n = c_B`
observations, the :math:`q`-quantile lies in the first bucket :math:`i` with
:math:`c_i \\ge q n`, and is interpolated linearly inside it:
:math:`b_{i-1} + (b_i - b_{i-1}) (q n - c_{i-1}) / (c_i - c_{i-1})` (:math:`b_0 = 0`,
:math:`c_0 = 0`). A quantile in the :math:`+\\infty` bucket is reported as the largest finite
bound (a lower bound of the truth). The estimate is exact only to within its bucket.

**Windows.** :class:`HealthWindow` keeps the totals of the previous look, so the page shows both
"since the process started" and "since the previous look" (rates are counts over elapsed time).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["HealthWindow", "RouteHealth", "Snapshot", "histogram_quantile", "snapshot"]

_REQUESTS = "privrank_http_requests"
_LATENCY = "privrank_http_request_duration_seconds"


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float:
    """The ``q``-quantile of a histogram (Prometheus's ``histogram_quantile``; see the module
    docstring).

    Args:
        q: The quantile, in [0, 1].
        bounds: The buckets' upper bounds, increasing; the last one is ``inf``.
        cumulative: Observations at or below each bound (non-decreasing).

    Returns:
        The estimate in seconds; ``nan`` when the histogram holds no observation.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1]. Got {q!r}")
    if len(bounds) != len(cumulative) or not bounds or not math.isinf(bounds[-1]):
        raise ValueError("bounds and counts must have the same length, the last bound +inf")
    total = cumulative[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Snapshot:
    """Cumulative request counts and latency buckets by route at one moment.

    Attributes:
        at: Monotonic time of the snapshot.
        requests: ``(route, status) → count``.
        buckets: ``route → cumulative bucket counts`` (aligned with :attr:`bounds`).
        bounds: The histogram's bucket upper bounds (the last is ``inf``).
    """

    at: float
    requests: dict[tuple[str, str], float]
    buckets: dict[str, list[float]]
    bounds: list[float]


def snapshot(registry: Any, clock: Callable[[], float] = time.monotonic) -> Snapshot:
    """Read the request counter and latency histogram from a Prometheus ``registry``."""
    requests: dict[tuple[str, str], float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in registry.collect():
        if family.name == _REQUESTS:
            for sample in family.samples:
                if sample.name == _REQUESTS + "_total":
                    key = (sample.labels["route"], sample.labels["status"])
                    requests[key] = requests.get(key, 0.0) + sample.value
        elif family.name == _LATENCY:
            for sample in family.samples:
                if sample.name == _LATENCY + "_bucket":
                    bound = float(sample.labels["le"])
                    buckets.setdefault(sample.labels["route"], {})[bound] = sample.value
    bounds = sorted({b for route in buckets.values() for b in route}) or [math.inf]
    aligned = {route: [counts.get(b, 0.0) for b in bounds] for route, counts in buckets.items()}
    return Snapshot(at=clock(), requests=requests, buckets=aligned, bounds=bounds)


@dataclass(frozen=True)
class RouteHealth:
    """One route over a window.

    Attributes:
        route: The route template (``/v1/recommend``), or ``all`` for every route together.
        requests: Requests finished in the window.
        errors: Of which answered with a 5xx status.
        rate: Requests per second over the window.
        p50_ms: Median latency (ms; ``nan`` without requests).
        p99_ms: 99th-percentile latency (ms; ``nan`` without requests).
    """

    route: str
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p99_ms: float


def _minus(now: list[float], before: list[float] | None) -> list[float]:
    if before is None:
        return list(now)
    return [a - b for a, b in zip(now, before, strict=True)]


def window(now: Snapshot, before: Snapshot | None, seconds: float) -> list[RouteHealth]:
    """Per-route health between ``before`` (``None``: the process start) and ``now``, over
    ``seconds``; the first row is ``all`` routes together, then routes by request count."""
    seconds = max(seconds, 1e-9)
    routes = sorted({route for route, _ in now.requests} | set(now.buckets))
    rows: list[RouteHealth] = []
    total_buckets = [0.0] * len(now.bounds)
    total_requests = total_errors = 0.0
    for route in routes:
        count = errors = 0.0
        for (r, status), value in now.requests.items():
            if r != route:
                continue
            previous = 0.0 if before is None else before.requests.get((r, status), 0.0)
            count += value - previous
            if status.startswith("5"):
                errors += value - previous
        old = None
        if before is not None and route in before.buckets and before.bounds == now.bounds:
            old = before.buckets[route]
        cumulative = _minus(now.buckets.get(route, [0.0] * len(now.bounds)), old)
        total_buckets = [a + b for a, b in zip(total_buckets, cumulative, strict=True)]
        total_requests += count
        total_errors += errors
        if count > 0:
            rows.append(_row(route, count, errors, seconds, now.bounds, cumulative))
    rows.sort(key=lambda row: -row.requests)
    everything = _row("all", total_requests, total_errors, seconds, now.bounds, total_buckets)
    return [everything, *rows]


def _row(
    route: str,
    count: float,
    errors: float,
    seconds: float,
    bounds: list[float],
    cumulative: list[float],
) -> RouteHealth:
    return RouteHealth(
        route=route,
        requests=round(count),
        errors=round(errors),
        rate=count / seconds,
        p50_ms=1000 * histogram_quantile(0.5, bounds, cumulative),
        p99_ms=1000 * histogram_quantile(0.99, bounds, cumulative),
    )


class HealthWindow:
    """Health since the process started and since the previous look.

    Args:
        registry: The app's Prometheus registry.
        started_at: Monotonic time the app was built.
        clock: Monotonic clock (tests).
    """

    def __init__(
        self,
        registry: Any,
        started_at: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._started_at = started_at
        self._clock = clock
        self._previous: Snapshot | None = None
        self._lock = threading.Lock()

    def look(self) -> dict[str, Any]:
        """Take a snapshot; return ``uptime_s``, ``since_start`` rows, and ``since_previous``
        rows with ``previous_s`` (``None`` on the first look)."""
        now = snapshot(self._registry, self._clock)
        with self._lock:
            previous, self._previous = self._previous, now
        uptime = now.at - self._started_at
        result: dict[str, Any] = {
            "uptime_s": uptime,
            "since_start": window(now, None, uptime),
            "since_previous": None,
            "previous_s": None,
        }
        if previous is not None:
            elapsed = now.at - previous.at
            result["since_previous"] = window(now, previous, elapsed)
            result["previous_s"] = elapsed
        return result
