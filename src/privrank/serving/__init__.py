"""Serving: the HTTP API over trained models, with API keys, a model store and an event store.

Install with the ``serve`` extra (FastAPI, uvicorn, prometheus-client). Build the app with
:func:`create_app` from :class:`ServeSettings`, or run ``privrank serve``.

Quick start (one model, one read key, loopback)::

    privrank train --model ease --data ml100k-holdout --out runs/ease
    KEY=$(privrank keys create --scope read --name web)
    privrank serve --model runs/ease --port 8000
    curl -s -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \\
        -d '{"user_id": "196", "k": 10}' http://127.0.0.1:8000/v1/recommend

Versioned serving: ``privrank store add STORE runs/ease --activate``, then
``privrank serve --store STORE``; activate or roll back with an ``admin`` key through
``POST /v1/models/{version}/activate`` and ``POST /v1/models/rollback``. The OpenAPI schema is at
``/openapi.json`` (interactive docs at ``/docs``).

Modules: :mod:`~privrank.serving.app` (endpoints, error mapping), :mod:`~.auth` (API keys),
:mod:`~.ratelimit`, :mod:`~.store` (model versions, hot swap), :mod:`~.events` (event store),
:mod:`~.schemas` (request and response bodies), :mod:`~.recommend` (answers and filters),
:mod:`~.middleware` (size limit, access log), :mod:`~.index` (FAISS retrieval for factor
models), :mod:`~.metrics`, :mod:`~.db`, :mod:`~.settings`.
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
