"""Latency quantiles and request rates from the Prometheus metrics (the console's health page),
against hand computations and against the exact quantiles of the observed latencies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrank.serving.console.health import HealthWindow, histogram_quantile, snapshot, window
from privrank.serving.metrics import ServingMetrics

INF = math.inf


def test_quantiles_by_hand() -> None:
    bounds, counts = [0.1, 0.2, 0.4, INF], [2, 6, 8, 10]
    # rank 5 lies in (0.1, 0.2] holding observations 3..6: 0.1 + 0.1 * (5 - 2) / (6 - 2)
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.175)
    assert histogram_quantile(0.2, bounds, counts) == pytest.approx(0.1)  # 0 + 0.1 * 2 / 2
    assert histogram_quantile(0.7, bounds, counts) == pytest.approx(0.3)  # 0.2 + 0.2 * 1 / 2
    # rank 9.9 lies in the +Inf bucket: the largest finite bound, a lower bound of the truth
    assert histogram_quantile(0.99, bounds, counts) == 0.4
    # empty buckets before the rank are skipped
    assert histogram_quantile(0.5, [0.1, 0.2, INF], [0, 4, 4]) == pytest.approx(0.15)
    assert math.isnan(histogram_quantile(0.5, bounds, [0, 0, 0, 0]))
    with pytest.raises(ValueError):
        histogram_quantile(1.5, bounds, counts)
    with pytest.raises(ValueError):
        histogram_quantile(0.5, [0.1, 0.2], [1, 2])  # no +Inf bucket


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantiles_fall_in_the_bucket_of_the_exact_quantile(seed: int) -> None:
    """The estimate from the app's own histogram lies in the same bucket as the exact sample
    quantile of the latencies observed (the most a bucketed histogram can promise)."""
    rng = np.random.default_rng(seed)
    latencies = rng.lognormal(mean=math.log(0.008), sigma=0.9, size=2_000)
    metrics = ServingMetrics()
    for value in latencies:
        metrics.observe("POST", "/v1/recommend", 200, float(value))
    now = snapshot(metrics.registry, clock=lambda: 10.0)
    (everything, route) = window(now, None, 10.0)
    assert route.route == "/v1/recommend" and route.requests == everything.requests == 2_000
    assert route.rate == pytest.approx(200.0)
    edges = [0.0, *now.bounds]
    for q, estimate_ms in ((0.5, route.p50_ms), (0.99, route.p99_ms)):
        exact = float(np.quantile(latencies, q, method="inverted_cdf"))
        bucket = next(i for i in range(1, len(edges)) if exact <= edges[i])
        assert edges[bucket - 1] <= estimate_ms / 1000 <= edges[bucket], (q, exact, estimate_ms)


def test_the_window_since_the_previous_look_counts_only_what_came_after() -> None:
    metrics = ServingMetrics()
    clock = iter([100.0, 104.0])
    look = HealthWindow(metrics.registry, 0.0, clock=lambda: next(clock))
    for _ in range(50):
        metrics.observe("GET", "/v1/models", 200, 0.004)
    metrics.observe("GET", "/v1/models", 500, 0.004)
    first = look.look()
    assert first["since_previous"] is None
    assert first["since_start"][0].requests == 51 and first["since_start"][0].errors == 1
    for _ in range(8):
        metrics.observe("GET", "/v1/models", 200, 0.03)
    second = look.look()
    assert second["previous_s"] == pytest.approx(4.0)
    (_, route) = second["since_previous"]
    assert route.requests == 8 and route.errors == 0
    assert route.rate == pytest.approx(2.0)  # 8 requests in 4 s
    # all 8 in the (0.02, 0.05] bucket: the median interpolates to its middle
    assert route.p50_ms == pytest.approx(35.0)
    assert second["since_start"][0].requests == 59
    assert second["uptime_s"] == pytest.approx(104.0)
