"""The settings of one API server (frozen, validated; the CLI fills them from its options)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from privrank.serving.db import default_database_url

__all__ = [
    "AUTO_EXACT_THRESHOLD",
    "DEFAULT_RECALL_FLOOR",
    "SETTINGS_ENV",
    "ServeSettings",
    "is_loopback",
]

SETTINGS_ENV = "PRIVRANK_SERVE_SETTINGS"
"""Environment variable through which ``privrank serve`` hands settings (JSON) to workers."""

AUTO_EXACT_THRESHOLD = 20_000
"""Largest catalogue ``--index auto`` searches exactly; above it HNSW. Measured by
``bench/serving/index_search.py`` (BENCHMARKS.md, "Serving"): exact single-query search is
linear in the catalogue (0.14 ms at 10k items, 0.33 ms at 30k, 1.1-1.9 ms at 100k, 64 factors)
while HNSW stays at 0.05-0.09 ms; see :mod:`privrank.serving.index`."""

DEFAULT_RECALL_FLOOR = 0.95
"""Lowest recall@10 against exact scoring an approximate index or pruned neighbour matrix may
have to be served."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, ``127.0.0.0/8``, ``::1``): the only
    addresses insecure development mode may listen on."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeSettings(BaseModel):
    """What the server serves and how it guards itself.

    Attributes:
        model_dir: Serve this one model directory (a saved model or a ``privrank train`` output).
        store_dir: Serve the active version of this model store (activation and rollback work).
        database_url: Where API keys and events live (SQLite file or PostgreSQL URL).
        insecure_dev: Accept requests without API keys (development on loopback only).
        max_body_bytes: Larger request bodies are refused with 413.
        body_timeout_s: Seconds a client has to deliver the whole request body once the server
            reads it (else 408 and the connection is closed: a ``Content-Length`` larger than
            what is sent cannot hold a connection open).
        rate_limit: Requests per second per API key (token bucket; ``0`` disables).
        rate_burst: Requests a key may send at once.
        auth_failure_rate: Failed authentications per second a client address may make
            (token bucket, checked *before* any key is verified; ``0`` disables).
        auth_failure_burst: Failed authentications a client address may make at once.
        read_max_k: Largest ``k`` a ``read`` credential (a read key or a user token) may ask for;
            ``service`` keys and above may ask for up to 1,000.
        read_max_filter_ids: Most ids a ``read`` credential may send in ``allow`` or
            ``exclude`` (``service`` and above: 100,000).
        read_max_candidates: Most candidates a ``read`` credential may send to ``/v1/rank``
            (``service`` and above: 10,000). With these three bounds, enumerating the catalogue
            to learn what ``exclude_seen`` left out takes a credential allowed to ask for that
            user anyway.
        key_cache_ttl_s: Seconds a verified key is trusted before the database is asked again
            (how long a key revoked by another process may still work).
        refresh_interval_s: How often the model store's pointer is checked for a version
            activated by another process.
        index: FAISS retrieval for factor models: ``auto`` (exact up to
            ``index_exact_threshold`` items, HNSW above), ``exact``, ``hnsw``, ``ivf`` or
            ``off`` (every model scores every item itself; no neighbour matrix either).
        index_exact_threshold: Largest catalogue searched exactly under ``auto``.
        index_recall_floor: Lowest recall@10 against exact scoring an approximate index
            (``hnsw``, ``ivf``, ``auto`` above the threshold) or a pruned neighbour matrix may
            have; ``auto`` falls back to exact search below it, explicit choices are refused.
        neighbours: Item-item models (ItemKNN, EASE): weights kept per item in the sparse
            neighbour matrix answers are computed from. ``None``: every non-zero for a sparse
            model matrix (ItemKNN, exact), none for a dense one (EASE scores densely); ``0``:
            no neighbour matrix; ``K``: the ``K`` largest weights per item (approximate,
            recall checked).
        console: Serve the operator console under ``/console`` (:mod:`privrank.serving.console`).
        runs_dir: Where the console looks for evaluation runs (``privrank evaluate --out``
            directories, each with a ``summary.json``) and ``privrank train`` outputs;
            ``None``: ``$PRIVRANK_HOME/runs``.
        ledger_url: The privacy budget ledger the console shows; ``None``:
            ``$PRIVRANK_LEDGER_URL``, else ``$PRIVRANK_HOME/ledger.sqlite``.
        console_session_ttl_s: Seconds a console sign-in lasts (expiry kept on the server).
        ads_model: A click-model directory (``privrank ads train``) for ``POST /v1/ads/rank``.
        search_dir: A ``privrank search build`` directory served by ``POST /v1/search``
            (:mod:`privrank.serving.search_route`); ``None``: no search.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: Path | None = None
    store_dir: Path | None = None
    database_url: str = Field(default_factory=default_database_url)
    insecure_dev: bool = False
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    body_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    rate_limit: float = Field(default=100.0, ge=0)
    rate_burst: int = Field(default=200, ge=1)
    auth_failure_rate: float = Field(default=1.0, ge=0)
    auth_failure_burst: int = Field(default=20, ge=1)
    read_max_k: int = Field(default=100, ge=1, le=1000)
    read_max_filter_ids: int = Field(default=1000, ge=0, le=100_000)
    read_max_candidates: int = Field(default=1000, ge=1, le=10_000)
    key_cache_ttl_s: float = Field(default=5.0, ge=0, le=3600)
    refresh_interval_s: float = Field(default=1.0, gt=0, le=3600)
    index: Literal["auto", "exact", "hnsw", "ivf", "off"] = "auto"
    index_exact_threshold: int = Field(default=AUTO_EXACT_THRESHOLD, ge=1)
    index_recall_floor: float = Field(default=DEFAULT_RECALL_FLOOR, ge=0, le=1)
    neighbours: int | None = Field(default=None, ge=0)
    console: bool = True
    runs_dir: Path | None = None
    ledger_url: str | None = None
    console_session_ttl_s: float = Field(default=8 * 3600.0, ge=1, le=7 * 86400)
    ads_model: Path | None = None
    search_dir: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.model_dir is None) == (self.store_dir is None):
            raise ValueError("give exactly one of model_dir (--model) and store_dir (--store)")
        return self
