"""Prometheus metrics of one app instance (its own registry, so apps never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServingMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingMetrics:
    """Request counts and latencies by route, rate-limit refusals, events and model swaps.

    Counters are per server process; with several workers each exposes its own.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "privrank_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "privrank_http_request_duration_seconds",
            "Time from request to response by route template.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "privrank_rate_limited_requests",
            "Requests refused with 429.",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "privrank_auth_failures",
            "Requests refused with 401 or 403.",
            ["status"],
            registry=self.registry,
        )
        self.events = Counter(
            "privrank_events",
            "Events ingested, by outcome (accepted or duplicate).",
            ["outcome"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "privrank_model_swaps", "Model versions activated.", registry=self.registry
        )
        self.model_info = Gauge(
            "privrank_model_active",
            "1 for the model version being served.",
            ["version", "model"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def set_active(self, version: str, model: str) -> None:
        """Mark ``version`` as the one being served."""
        self.model_info.clear()
        self.model_info.labels(version, model).set(1)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
