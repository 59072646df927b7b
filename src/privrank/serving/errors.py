"""Errors the serving layer raises on purpose, part of privrank's one exception tree.

The HTTP layer maps the whole :class:`~privrank.errors.PrivrankError` tree to status codes in one
handler (:func:`privrank.serving.app.status_for`).
"""

from __future__ import annotations

from privrank.errors import ArtifactError, PrivrankError

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "IndexQualityError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServingError",
    "StorageError",
    "UnavailableError",
]


class ServingError(PrivrankError):
    """Base class of the serving layer's own errors."""


class AuthenticationError(ServingError, PermissionError):
    """No API key, or one that is unknown or revoked (HTTP 401)."""


class PermissionDeniedError(ServingError, PermissionError):
    """A valid API key whose scope does not allow the request (HTTP 403)."""


class RateLimitedError(ServingError, RuntimeError):
    """The key's request budget is spent for now (HTTP 429 with ``Retry-After``).

    Attributes:
        retry_after_s: Seconds until a request would be accepted again.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFoundError(ServingError, LookupError):
    """A named thing (model version, item, key) does not exist (HTTP 404)."""


class ConflictError(ServingError, RuntimeError):
    """The request cannot be honoured in the current state, e.g. no version to roll back to
    (HTTP 409)."""


class UnavailableError(ServingError, RuntimeError):
    """The service cannot answer yet, e.g. no model is loaded (HTTP 503)."""


class StorageError(ServingError, OSError):
    """The serving database cannot be reached or refused an operation (HTTP 503)."""


class IndexQualityError(ServingError, ArtifactError):
    """A retrieval structure built at load (an approximate FAISS index, a pruned neighbour
    matrix) misses the configured recall floor against exact scoring, and was asked for
    explicitly: the model version is refused (HTTP 409) rather than served with worse answers."""
