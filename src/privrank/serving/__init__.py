"""Serving: the HTTP API over trained models, with API keys, a model store and an event store.

Install with the ``serve`` extra (FastAPI, uvicorn, prometheus-client). Build the app with
:func:`create_app` from :class:`ServeSettings`, or run ``privrank serve``.

Quick start (one model, one service key, loopback)::

    privrank train --model ease --data ml100k-holdout --out runs/ease
    KEY=$(privrank keys create --scope service --name backend)
    privrank serve --model runs/ease --port 8000
    curl -s -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \\
        -d '{"user_id": "196", "k": 10}' http://127.0.0.1:8000/v1/recommend

Versioned serving: ``privrank store add STORE runs/ease --activate``, then
``privrank serve --store STORE``; activate or roll back with an ``admin`` key through
``POST /v1/models/{version}/activate`` and ``POST /v1/models/rollback``. The OpenAPI schema is at
``/openapi.json`` (interactive docs at ``/docs``).

Retrieval: a factor model (iALS, BPR, ...) answers through a FAISS index built at load
(``--index auto|exact|hnsw|ivf|off``; ``auto`` is exact up to 20,000 items and HNSW above);
an item-item model (ItemKNN; EASE with ``--neighbours K``) through a sparse top-k neighbour
matrix. Every approximate structure's recall@10 against exact scoring is measured at load,
logged, and reported by ``GET /readyz`` and ``GET /v1/models``; below
``--index-recall-floor`` (0.95) ``auto`` falls back to exact search and explicit choices are
refused (the version is not served).

**State per worker process.** ``privrank serve --workers N`` runs N processes that share only
the database (keys, events) and the model store on disk. Three things are kept *per process*:

- the rate limit: each worker has its own token buckets, so a key may get up to
  ``N × --rate-limit`` requests/s in all (set ``--rate-limit`` to the total divided by N);
- the Prometheus counters of ``GET /metrics``: a scrape is answered by whichever worker
  accepts the connection and shows that worker's counts only, so successive scrapes can jump
  between workers' series (a counter may even seem to go down). For exact totals run
  ``--workers 1`` per port (one process per scrape target, several behind a load balancer) and
  sum the targets; with ``--workers N`` read the figures as one worker's sample;
- the verified-key cache (``key_cache_ttl_s``, 5 s): a key revoked through another process
  keeps working in a worker for at most that long.

Model activations are shared: every worker polls ``ACTIVE.json`` each second.

Who may ask what (scopes, user tokens, bounds) and what answers reveal: README, "Security model".
A private model is served only from its release artifact (:mod:`~.store`); users' histories
then come from the event store (:mod:`~.histories`).

Modules: :mod:`~privrank.serving.app` (endpoints, error mapping), :mod:`~.auth` (API keys),
:mod:`~.tokens` (user tokens), :mod:`~.secrets` (the pepper and signing secret),
:mod:`~.histories` (users' histories from the event store),
:mod:`~.ratelimit`, :mod:`~.store` (model versions, hot swap), :mod:`~.events` (event store),
:mod:`~.schemas` (request and response bodies), :mod:`~.recommend` (answers and filters),
:mod:`~.middleware` (size limit, access log), :mod:`~.index` (FAISS retrieval for factor
models), :mod:`~.neighbours` (sparse neighbour matrices for item-item models), :mod:`~.metrics`,
:mod:`~.db`, :mod:`~.settings`.

Layer: above workflow (trained-model directories are read by
:mod:`privrank.workflow.model_dir`); may import workflow, models, privacy, metrics, data and the
base modules; never tuning, distributed or the CLI (contracts in ``pyproject.toml``).
"""

from privrank.serving.auth import ApiKey, CreatedKey, KeyStore, Scope
from privrank.serving.db import default_database_url, make_engine
from privrank.serving.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServingError,
    StorageError,
    UnavailableError,
)
from privrank.serving.events import Event, EventStore, IngestResult
from privrank.serving.settings import ServeSettings
from privrank.serving.store import ModelStore, ServedModel, VersionInfo

__all__ = [
    "ApiKey",
    "AuthenticationError",
    "ConflictError",
    "CreatedKey",
    "Event",
    "EventStore",
    "IngestResult",
    "KeyStore",
    "ModelStore",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "Scope",
    "ServeSettings",
    "ServedModel",
    "ServingError",
    "StorageError",
    "UnavailableError",
    "VersionInfo",
    "create_app",
    "default_database_url",
    "make_engine",
]


def __getattr__(name: str):
    # The app pulls in FastAPI: import it only when asked for.
    if name == "create_app":
        from privrank.serving.app import create_app

        return create_app
    raise AttributeError(f"module 'privrank.serving' has no attribute {name!r}")
