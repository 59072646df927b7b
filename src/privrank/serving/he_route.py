"""``/v1/he/*``: encrypted scoring of the served factor model (CKKS, TenSEAL).

- ``GET /v1/he/params``: the public CKKS parameters for the active model (``read`` scope).
- ``POST /v1/he/score``: a binary body (``application/octet-stream``,
  :class:`~privrank.privacy.crypto.he_scoring.ScoreRequest`: Galois keys, the encrypted user
  vector, optional candidate ids); the answer is JSON with the encrypted scores of the whole
  catalogue or of the candidates (``read`` scope; a ``read`` credential may send at most
  ``read_max_candidates`` candidates, like ``/v1/rank``).

The server learns nothing about the user vector (CKKS semantic security), only who asked, when
and which catalogue or candidate set was scored; the client learns the scores of every scored
item, hence (with enough queries) the model's item vectors. See
:mod:`privrank.privacy.crypto.he_scoring.protocol` for the full statement. Bodies are bounded
by the server's body limit (``max_body_bytes``, 1 MiB by default: a request for 64 factors is
about 0.85 MB) and by :data:`MAX_REQUEST_BYTES`; a malformed or invalid body is refused with
422 before any homomorphic work, a wrong content type with 415.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from privrank.errors import DataError
from privrank.models.capabilities import FactorModel
from privrank.serving.auth import Principal, Scope
from privrank.serving.errors import ConflictError, PermissionDeniedError, ServingError

if TYPE_CHECKING:
    from privrank.privacy.crypto.he_scoring import EncryptedScorer

__all__ = ["MAX_REQUEST_BYTES", "add_he_routes"]

#: The largest encrypted-scoring body accepted (the server-wide limit also applies).
MAX_REQUEST_BYTES = 4 << 20
_CONTENT_TYPE = "application/octet-stream"


class UnsupportedMediaTypeError(ServingError, ValueError):
    """The body is not ``application/octet-stream`` (HTTP 415)."""


class _Scorers:
    """One :class:`EncryptedScorer` per served model version (the active one is kept)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_version: dict[str, EncryptedScorer] = {}

    def get(self, served: Any) -> EncryptedScorer:
        from privrank.privacy.crypto.he_scoring import EncryptedScorer

        with self._lock:
            scorer = self._by_version.get(served.version)
            if scorer is None:
                model: Any = served.model
                if not isinstance(model, FactorModel):
                    raise ConflictError(
                        f"encrypted scoring needs a factor model; the served model is a "
                        f"{served.model.name!r} model"
                    )
                item_ids = served.model.item_ids_.to_pylist()
                scorer = EncryptedScorer(item_ids, model.item_vectors(), model.item_biases())
                self._by_version = {served.version: scorer}
            return scorer


def add_he_routes(app: FastAPI, reader: Any) -> None:
    """Register the ``/v1/he`` routes on ``app``; ``reader`` is the app's ``read``-scope
    dependency (authentication, scope and rate limit, as for every ``/v1`` route)."""
    scorers = _Scorers()

    def _scorer(request: Request) -> EncryptedScorer:
        return scorers.get(request.app.state.serving.store.current)

    @app.get("/v1/he/params", tags=["encrypted"], dependencies=[reader])
    async def he_params(request: Request) -> JSONResponse:
        """The CKKS parameters for encrypted scoring of the active model."""
        served = request.app.state.serving.store.current
        scorer = await asyncio.to_thread(scorers.get, served)
        return JSONResponse(
            {
                "params": scorer.params.model_dump(mode="json"),
                "model_version": served.version,
                "n_items": len(scorer.item_ids),
            }
        )

    @app.post("/v1/he/score", tags=["encrypted"])
    async def he_score(request: Request, who: Principal = reader) -> JSONResponse:
        """Encrypted scores of the catalogue (or of candidates) for an encrypted user vector.

        The server never sees the user vector; the client decrypts and ranks."""
        from privrank.privacy.crypto.he_scoring import ScoreRequest

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != _CONTENT_TYPE:
            raise UnsupportedMediaTypeError(
                f"encrypted scoring takes a {_CONTENT_TYPE} body (from privrank's HE client)"
            )
        body = await request.body()
        if len(body) > MAX_REQUEST_BYTES:
            raise DataError(
                f"encrypted scoring request of {len(body)} bytes; the most is {MAX_REQUEST_BYTES}"
            )
        parsed = ScoreRequest.from_bytes(body)
        settings = request.app.state.serving.settings
        if (
            parsed.candidates is not None
            and not who.scope.grants(Scope.SERVICE)
            and len(parsed.candidates) > settings.read_max_candidates
        ):
            raise PermissionDeniedError(
                f"candidates: {len(parsed.candidates)} is above {settings.read_max_candidates}, "
                f"the most a {who.scope.value!r} credential may ask for"
            )
        scorer = await asyncio.to_thread(_scorer, request)
        response = await asyncio.to_thread(scorer.score, parsed)
        return JSONResponse(response.to_json())

    @app.exception_handler(UnsupportedMediaTypeError)
    async def unsupported(_request: Request, exc: UnsupportedMediaTypeError) -> JSONResponse:
        return JSONResponse(
            {"error": "unsupported_media_type", "message": str(exc)}, status_code=415
        )
