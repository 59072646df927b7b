"""The FastAPI application: versioned ``/v1`` API over the model store, key store and events.

Endpoints (scope needed in brackets; see :mod:`privrank.serving.auth`):

- ``POST /v1/recommend`` [service, or a user token for that user]: top-k for a user id.
- ``POST /v1/recommend/history`` [read]: top-k for an ad-hoc history, kept in memory only.
- ``GET /v1/items/{item_id}/similar`` [read]: items related to an item.
- ``POST /v1/rank`` [read; with a user id: service, or a user token for that user]: order the
  caller's candidates for a user or a history.
- ``POST /v1/events`` [write]: ingest interaction events (idempotent by event id).
- ``POST /v1/tokens`` [write]: mint a user token for one user id (:mod:`~.tokens`).
- ``GET /v1/models`` [read]; ``POST /v1/models/{version}/activate``,
  ``POST /v1/models/rollback`` [admin].
- ``GET /healthz`` (alive), ``GET /readyz`` (model loaded, database reachable), ``GET /metrics``
  [read] (Prometheus).
- ``/console/…`` [an admin key, through a sign-in session]: the operator console
  (:mod:`privrank.serving.console`; off with ``console=False``).

Every error is answered as ``{"error": code, "message": text}`` with the status of
:func:`status_for`; validation errors (422) add ``fields``, each naming the offending field.
Request values are never echoed in errors of validation and never logged. Error messages never
carry absolute file paths, database URLs or checksums (:func:`redact`; the server log has the
details). A request is authenticated before its body is judged: a malformed body from a caller
without a valid credential is a 401, not a 422.

**Failed authentication** is rate-limited per client address *before* any credential is
verified (``auth_failure_rate``/``auth_failure_burst``): an address that keeps sending bad keys
gets 429 at the cost of a dictionary lookup. Verification itself is one database read and one
HMAC (see :mod:`~.auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from privrank.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    NotTrainedError,
    PrivacyBudgetExceeded,
    PrivrankError,
)
from privrank.serving import recommend as answers
from privrank.serving.ads_route import add_ads_routes
from privrank.serving.auth import KeyStore, Principal, Scope
from privrank.serving.db import make_engine
from privrank.serving.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    StorageError,
    UnavailableError,
)
from privrank.serving.events import Event, EventStore
from privrank.serving.he_route import add_he_routes
from privrank.serving.histories import EventHistories
from privrank.serving.hot_path import HotPathMiddleware, HotRoute
from privrank.serving.metrics import ServingMetrics
from privrank.serving.middleware import (
    AccessLogMiddleware,
    BodySizeLimitMiddleware,
    log_unexpected,
)
from privrank.serving.ratelimit import RateLimiter
from privrank.serving.reranked import RerankedAnswer, RerankedRequest, add_reranked_routes
from privrank.serving.schemas import (
    MAX_K,
    EventsRequest,
    EventsResponse,
    HistoryRecommendRequest,
    ModelInfo,
    ModelsResponse,
    RankRequest,
    RankResponse,
    RecommendRequest,
    RecommendResponse,
    TokenRequest,
    TokenResponse,
)
from privrank.serving.search_route import add_search_routes
from privrank.serving.settings import ServeSettings
from privrank.serving.store import IndexOptions, ModelStore, ServedModel
from privrank.serving.tokens import TOKEN_PREFIX, UserTokens

__all__ = ["API_VERSION", "ServingState", "app_from_env", "create_app", "redact", "status_for"]

log = logging.getLogger("privrank.serving")
API_VERSION = "v1"
INSECURE = Principal(name="insecure-dev", scope=Scope.ADMIN, bucket="insecure-dev")
_MAX_FAILURE_BUCKETS = 100_000

# Most specific first: the first class an error is an instance of decides its status.
_STATUS: list[tuple[type[BaseException], int, str]] = [
    (AuthenticationError, 401, "unauthorized"),
    (PermissionDeniedError, 403, "forbidden"),
    (RateLimitedError, 429, "rate_limited"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (ArtifactError, 409, "model_refused"),
    (PrivacyBudgetExceeded, 409, "privacy_budget_exceeded"),
    (UnavailableError, 503, "unavailable"),
    (NotTrainedError, 503, "unavailable"),
    (StorageError, 503, "storage_unavailable"),
    (DataError, 422, "invalid_data"),
    (ConfigError, 422, "invalid_request"),
    (PrivrankError, 500, "internal_error"),
]


def status_for(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code of a privrank error (500 for anything unexpected)."""
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?/[^\s'\"`,;:()]+")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_DIGEST = re.compile(r"\b[0-9a-f]{32,}\b")


def redact(message: str) -> str:
    """``message`` without URLs (database URLs included), hex digests (checksums) and the
    directories of absolute file paths (``/srv/models/v3/arrays.safetensors`` becomes
    ``…/arrays.safetensors``): what an HTTP error body may say."""
    message = _URL.sub("<url>", message)
    message = _PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], message)
    return _DIGEST.sub("<digest>", message)


class ServingState:
    """What the endpoints share: settings, the model store, keys, tokens, events, histories,
    limits, metrics."""

    def __init__(
        self,
        settings: ServeSettings,
        store: ModelStore,
        keys: KeyStore,
        events: EventStore,
        limiter: RateLimiter,
        metrics: ServingMetrics,
        failures: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys
        self.tokens = UserTokens(keys.engine, keys)
        self.events = events
        self.histories = EventHistories(keys.engine)
        self.limiter = limiter
        self.failures = failures or RateLimiter(
            settings.auth_failure_rate, settings.auth_failure_burst
        )
        self.metrics = metrics
        # Credential verifications in flight, by the key store's fingerprint of the credential.
        self.verifying: dict[bytes, asyncio.Future[Principal | None]] = {}


def _open_store(settings: ServeSettings) -> ModelStore:
    index = IndexOptions.from_settings(settings)
    if settings.model_dir is not None:
        return ModelStore.single(settings.model_dir, index=index)
    if settings.store_dir is None:  # ServeSettings requires one of them
        raise ConfigError("serving needs a model directory or a model store")
    return ModelStore(settings.store_dir, index=index)


def _presented_key(header: Callable[[str], str | None]) -> str | None:
    """The credential of a request whose (lower-case) headers ``header`` looks up: a Bearer
    token, else the ``X-API-Key`` header."""
    authorization = header("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    value = header("x-api-key")
    return value.strip() if value and value.strip() else None


def _cached_principal(state: ServingState, headers: list[tuple[bytes, bytes]]) -> Principal | None:
    """The principal of an API key in the verified-key cache, else ``None`` (no credential, a
    user token, a key to verify, or insecure dev mode: :func:`authenticate` decides those)."""
    if state.settings.insecure_dev:
        return None
    raw = _presented_key(Headers(raw=headers).get)
    if raw is None or raw.startswith(TOKEN_PREFIX):
        return None
    key = state.keys.cached(raw)
    return None if key is None else Principal.of_key(key)


_BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")


def _client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "-"


async def authenticate(request: Request) -> Principal:
    """The principal of the request's credential (an API key or a user token).

    Raises:
        AuthenticationError: No credential, or one that is unknown, revoked, expired or forged.
        RateLimitedError: The client address has failed too often; nothing is verified.
    """
    state: ServingState = request.app.state.serving
    if state.settings.insecure_dev:
        return INSECURE
    raw = _presented_key(request.headers.get)
    if raw is None:
        raise AuthenticationError(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'"
        )
    key = state.keys.cached(raw)
    if key is not None:
        return Principal.of_key(key)
    # Requests that present the same credential while it is being verified wait for that one
    # verification instead of each taking a failure token: a burst of valid requests from one
    # address that arrives before the first answer (a cold cache under load) is not refused as
    # a burst of failures, and a burst of one bad credential costs one verification.
    fingerprint = state.keys.fingerprint(raw)
    pending = state.verifying.get(fingerprint)
    leader = pending is None
    if pending is None:
        # A token is taken *before* verification (and given back on success), so different bad
        # credentials arriving together cannot all be verified before the first failure counts.
        address = _client_address(request)
        wait = state.failures.acquire(address)
        if wait > 0:
            raise RateLimitedError("too many failed authentications from this address", wait)
        pending = _start_verification(state, raw, fingerprint)
    principal = await asyncio.shield(pending)
    if principal is None:
        if leader:
            state.failures.forget_full(_MAX_FAILURE_BUCKETS)
        raise AuthenticationError("the credential is unknown, revoked or expired")
    if leader:
        state.failures.refund(address)
    return principal


def _start_verification(
    state: ServingState, raw: str, fingerprint: bytes
) -> asyncio.Future[Principal | None]:
    """Verify ``raw`` in the thread pool as a task of its own, registered under
    ``fingerprint`` in ``state.verifying`` until it ends (a cancelled request does not cancel
    the verification the others wait for)."""

    def verify() -> Principal | None:
        if raw.startswith(TOKEN_PREFIX):
            return state.tokens.verify(raw)
        verified = state.keys.verify(raw)
        return None if verified is None else Principal.of_key(verified)

    task = asyncio.ensure_future(run_in_threadpool(verify))
    state.verifying[fingerprint] = task

    def done(finished: asyncio.Future[Principal | None]) -> None:
        state.verifying.pop(fingerprint, None)
        if not finished.cancelled():
            finished.exception()  # retrieved here: every waiter re-raises it itself

    task.add_done_callback(done)
    return task


def require(scope: Scope) -> Any:
    """A dependency that authenticates the request, checks ``scope`` and the rate limit, and
    gives the :class:`Principal`."""

    async def dependency(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
        _header: Annotated[str | None, Security(_API_KEY_HEADER)] = None,
    ) -> Principal:
        # The two Security parameters document the schemes in OpenAPI; the key is read here.
        principal = await authenticate(request)
        request.state.key_name = principal.name
        _admit(request.app.state.serving, principal, scope)
        return principal

    return Depends(dependency)


def _admit(state: ServingState, principal: Principal, scope: Scope) -> None:
    """Check that ``principal`` has ``scope`` and take one request from its rate limit.

    Raises:
        PermissionDeniedError: The credential's scope is below ``scope``.
        RateLimitedError: The credential's rate limit is spent.
    """
    if not principal.scope.grants(scope):
        raise PermissionDeniedError(
            f"this credential has scope {principal.scope.value!r}; this request needs "
            f"{scope.value!r}"
        )
    wait = state.limiter.acquire(principal.bucket)
    if wait > 0:
        raise RateLimitedError(
            f"rate limit of {state.limiter.rate:g} requests/s for this credential exceeded",
            wait,
        )


def _check_user(principal: Principal, user_id: Any) -> None:
    if not principal.may_ask_for(user_id):
        raise PermissionDeniedError(
            "this credential may not ask about this user: asking about any user id needs scope "
            "'service'; a user token may ask only about the user it was minted for"
        )


def _check_bounds(
    state: ServingState,
    principal: Principal,
    *,
    k: int | None = None,
    allow: list | None = None,
    exclude: list | None = None,
    candidates: list | None = None,
) -> None:
    """Refuse sizes above what the principal's scope may ask for (``read`` credentials are
    bounded by the ``read_max_*`` settings; ``service`` and above by the schema only)."""
    if principal.scope.grants(Scope.SERVICE):
        return
    settings = state.settings
    n_candidates = None if candidates is None else len(candidates)
    checks = [
        ("k", k, settings.read_max_k),
        ("allow", None if allow is None else len(allow), settings.read_max_filter_ids),
        ("exclude", None if exclude is None else len(exclude), settings.read_max_filter_ids),
        ("candidates", n_candidates, settings.read_max_candidates),
    ]
    for field, size, bound in checks:
        if size is not None and size > bound:
            raise PermissionDeniedError(
                f"{field}: {size} is above {bound}, the most a {principal.scope.value!r} "
                "credential may ask for; larger requests need scope 'service'"
            )


def _error_response(exc: BaseException, state: ServingState | None) -> JSONResponse:
    status, code = status_for(exc)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = RateLimiter.retry_after(exc.retry_after_s)
        if state is not None:
            state.metrics.rate_limited.inc()
    if status in (401, 403) and state is not None:
        state.metrics.auth_failures.labels(str(status)).inc()
    message = redact(str(exc)) if status < 500 or status == 503 else "internal server error"
    if status == 500:
        _log_unexpected(exc)
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _log_unexpected(exc: BaseException) -> None:
    log_unexpected(log, exc)


_UNION_TAGS = {"int", "str", "float", "bool", "none", "list", "dict"}


def _field_name(loc: tuple) -> str:
    """``("body", "exclude", 0, "constrained-int")`` → ``exclude.0``: the field as the client
    wrote it, without pydantic's union-member tags."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header") and len(parts) > 1:
        parts = parts[1:]
    tags = {p for p in parts[1:] if p in _UNION_TAGS or "-" in p or "[" in p}
    parts = [p for p in parts if p not in tags]
    return ".".join(parts) or "body"


def _validation_fields(errors) -> list[dict[str, str]]:
    merged: dict[str, list[str]] = {}
    for error in errors:
        field = _field_name(tuple(error.get("loc", ())))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if message not in merged.setdefault(field, []):
            merged[field].append(message)
    return [{"field": f, "message": " or ".join(m)} for f, m in merged.items()]


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(PrivrankError)
    async def privrank_error(request: Request, exc: PrivrankError) -> JSONResponse:
        return _error_response(exc, getattr(request.app.state, "serving", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Authenticate first: a caller without a valid credential learns nothing about what
        # a well-formed request looks like (401 before 422).
        state = getattr(request.app.state, "serving", None)
        if state is not None and request.url.path.startswith(f"/{API_VERSION}/"):
            try:
                await authenticate(request)
            except PrivrankError as auth_error:
                return _error_response(auth_error, state)
        fields = _validation_fields(exc.errors())
        message = "invalid request: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse(
            {"error": "validation_error", "message": message, "fields": fields}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


_JSON = "application/json"


def _json(payload: dict[str, Any]) -> Response:
    """A JSON answer serialised by orjson (numpy scalars included).

    The read endpoints return it instead of a pydantic model: FastAPI then skips validating
    and re-encoding the answer, which cost more than the search itself. The routes still
    declare their ``response_model`` (the OpenAPI schema), and the tests check that every
    answer matches it.
    """
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type=_JSON)


def _scored(ids: list, scores: list[float]) -> list[dict[str, Any]]:
    return [{"item_id": i, "score": s} for i, s in zip(ids, scores, strict=True)]


def _recommended(served: ServedModel, answer: answers.Answer) -> Response:
    """The :class:`RecommendResponse` of ``answer``, computed on ``served``."""
    return _json(
        {"model_version": served.version, "items": _scored(answer.item_ids, answer.scores)}
    )


async def _answer(served: ServedModel, allow: list | None, ask: Callable[[], Any]) -> Any:
    """``ask()`` on the event loop when ``served`` answers from its retrieval structure (a
    short search costs less than the hand-off to a worker thread), else in a worker thread (so
    a whole-catalogue scoring does not stall the worker's other requests)."""
    if answers.answered_from_retrieval(served, allow):
        return ask()
    return await run_in_threadpool(ask)


async def _event_history(
    state: ServingState, served: ServedModel, user_id: Any
) -> answers.HistoryOf | None:
    """The event store's history of ``user_id`` when the answer on ``served`` needs it, read
    in a worker thread (a database query must not block the event loop); else ``None``."""
    if not answers.needs_event_history(served, user_id):
        return None
    items = await run_in_threadpool(state.histories.items_of, user_id)
    return lambda _user_id: items


async def _state_of(request: Request) -> ServingState:
    return request.app.state.serving


State = Annotated[ServingState, Depends(_state_of)]
Reader = Annotated[Principal, require(Scope.READ)]
Writer = Annotated[Principal, require(Scope.WRITE)]


async def _recommend(state: ServingState, who: Principal, body: RecommendRequest) -> Response:
    """The answer of ``POST /v1/recommend`` (see the route's docstring)."""
    _check_user(who, body.user_id)
    _check_bounds(state, who, k=body.k, allow=body.allow, exclude=body.exclude)
    served = state.store.current
    history_of = await _event_history(state, served, body.user_id)
    answer = await _answer(
        served,
        body.allow,
        lambda: answers.recommend_user(
            served,
            body.user_id,
            body.k,
            exclude_seen=body.exclude_seen,
            exclude=body.exclude,
            allow=body.allow,
            history_of=history_of,
        ),
    )
    return _recommended(served, answer)


async def _recommend_history(
    state: ServingState, who: Principal, body: HistoryRecommendRequest
) -> Response:
    """The answer of ``POST /v1/recommend/history``."""
    _check_bounds(state, who, k=body.k, allow=body.allow, exclude=body.exclude)
    served = state.store.current
    answer = await _answer(
        served,
        body.allow,
        lambda: answers.recommend_history(
            served,
            body.history,
            body.k,
            exclude_seen=body.exclude_seen,
            exclude=body.exclude,
            allow=body.allow,
            ignore_unknown_items=body.ignore_unknown_items,
        ),
    )
    return _recommended(served, answer)


async def _rank(state: ServingState, who: Principal, body: RankRequest) -> Response:
    """The answer of ``POST /v1/rank``."""
    if body.user_id is not None:
        _check_user(who, body.user_id)
    _check_bounds(state, who, candidates=body.candidates)
    served = state.store.current
    history_of = None
    if body.user_id is not None and body.history is None:
        history_of = await _event_history(state, served, body.user_id)
    answer = await run_in_threadpool(
        answers.rank_candidates,
        served,
        body.candidates,
        user_id=body.user_id,
        history=body.history,
        history_of=history_of,
    )
    return _json(
        {
            "model_version": served.version,
            "items": _scored(answer.item_ids, answer.scores),
            "unknown": answer.unknown,
        }
    )


def _hot_path(app: Any, state: ServingState, reranked: RerankedAnswer) -> HotPathMiddleware:
    """The fast path of the POST read routes (:mod:`privrank.serving.hot_path`)."""

    def route(model: Any, answer: Any) -> HotRoute:
        return HotRoute(model, Scope.READ, lambda who, body: answer(state, who, body))

    return HotPathMiddleware(
        app,
        routes={
            "/v1/recommend": route(RecommendRequest, _recommend),
            "/v1/recommend/history": route(HistoryRecommendRequest, _recommend_history),
            "/v1/rank": route(RankRequest, _rank),
            "/v1/recommend/reranked": route(RerankedRequest, reranked),
        },
        cached_principal=lambda headers: _cached_principal(state, headers),
        admit=lambda principal, scope: _admit(state, principal, scope),
        render_error=lambda exc: _error_response(exc, state),
    )


def _add_routes(app: FastAPI) -> None:
    read, write, admin = require(Scope.READ), require(Scope.WRITE), require(Scope.ADMIN)
    add_he_routes(app, read)  # /v1/he: encrypted scoring (privrank.serving.he_route)
    # /v1/ads/rank: the ads auction (privrank.serving.ads_route)
    add_ads_routes(app, read, app.state.serving.settings.ads_model)
    # /v1/recommend/reranked (privrank.serving.reranked); its answer also serves the hot path
    app.state.reranked = add_reranked_routes(app, read)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(state: State) -> JSONResponse:
        """A model is loaded and the database answers; reports how answers are computed
        (``index``, ``neighbours``: the retrieval structures and their recall checks)."""
        try:
            served = state.store.current
        except UnavailableError:
            return JSONResponse(
                {"status": "not ready", "reason": "no model is loaded"}, status_code=503
            )
        try:
            state.events.ping()
        except StorageError as exc:
            log.error("readiness: %s", exc)  # the log may name the database; the answer not
            return JSONResponse(
                {"status": "not ready", "reason": "the database does not answer"},
                status_code=503,
            )
        return JSONResponse(
            {"status": "ready", "model_version": served.version, **served.retrieval()}
        )

    @app.get("/metrics", tags=["health"], dependencies=[read])
    def metrics(state: State) -> Response:
        """Prometheus metrics of this server process."""
        with contextlib.suppress(UnavailableError):
            current = state.store.current
            state.metrics.set_active(current.version, current.model.name)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    # The read endpoints are coroutines: an answer from a retrieval structure is computed on
    # the event loop, model scoring and database reads in worker threads (see _answer). The
    # POST ones are also answered by the hot path (privrank.serving.hot_path) when the request
    # is well-formed and its key cached; both call the same functions below.
    @app.post("/v1/recommend", tags=["recommend"], response_model=RecommendResponse)
    async def recommend(body: RecommendRequest, state: State, who: Reader) -> Response:
        """Top-k items for a user id. Needs scope ``service``, or a user token minted for this
        user.

        The history used is the model's training history for a user it was trained on when the
        model is **not** private, else the events this server holds for the id (a private model
        is served from its release artifact and knows no training users). ``exclude_seen``
        leaves that history out, so for a non-private model the answer reveals which items a
        training user interacted with to whoever may ask about that user (see the README's
        "Security model"). An id with no history gets the popularity ranking with rank scores;
        the answer does not say which case applied."""
        return await _recommend(state, who, body)

    @app.post("/v1/recommend/history", tags=["recommend"], response_model=RecommendResponse)
    async def recommend_history(
        body: HistoryRecommendRequest, state: State, who: Reader
    ) -> Response:
        """Top-k items for an ad-hoc history, folded in and forgotten (never stored or
        logged)."""
        return await _recommend_history(state, who, body)

    @app.get("/v1/items/{item_id}/similar", tags=["recommend"], response_model=RecommendResponse)
    async def similar(
        item_id: Annotated[str, Path(min_length=1, max_length=256)],
        state: State,
        who: Reader,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> Response:
        """Items related to ``item_id`` (the model's answer to a one-item history)."""
        _check_bounds(state, who, k=k)
        served = state.store.current
        answer = await _answer(served, None, lambda: answers.similar_items(served, item_id, k))
        return _recommended(served, answer)

    @app.post("/v1/rank", tags=["recommend"], response_model=RankResponse)
    async def rank(body: RankRequest, state: State, who: Reader) -> Response:
        """The caller's candidates ordered best first for a user id or a history. With a user
        id: scope ``service``, or a user token minted for this user (the history used is as in
        ``/v1/recommend``)."""
        return await _rank(state, who, body)

    @app.post("/v1/tokens", tags=["auth"])
    def mint_token(body: TokenRequest, state: State, who: Writer) -> TokenResponse:
        """A user token for ``user_id``: a signed credential, valid for ``ttl_s`` seconds, that
        may ask only about that user (scope ``read`` otherwise). Revoking the key that minted
        it revokes the token (within the key cache's TTL)."""
        token, expires = state.tokens.mint(who, body.user_id, body.ttl_s)
        return TokenResponse(token=token, expires_at=expires)

    @app.post("/v1/events", tags=["events"], dependencies=[write])
    def ingest(body: EventsRequest, state: State) -> EventsResponse:
        """Store interaction events; answered only after they are committed."""
        batch = [
            Event(
                event_id=e.event_id,
                user_id=str(e.user_id),
                item_id=str(e.item_id),
                event_type=e.event_type,
                occurred_at=e.timestamp,
                value=e.value,
            )
            for e in body.events
        ]
        result = state.events.ingest(batch)
        state.metrics.events.labels("accepted").inc(result.accepted)
        state.metrics.events.labels("duplicate").inc(result.duplicates)
        return EventsResponse(accepted=result.accepted, duplicates=result.duplicates)

    @app.get("/v1/models", tags=["models"], dependencies=[read])
    def models(state: State) -> ModelsResponse:
        """The model versions and the active one."""
        try:
            active = state.store.current.describe()
        except UnavailableError:
            active = None
        versions = [
            ModelInfo(version=v.version, model=v.model, active=v.active)
            for v in state.store.versions()
        ]
        return ModelsResponse(active=active, versions=versions)

    @app.post("/v1/models/rollback", tags=["models"], dependencies=[admin])
    def rollback(state: State) -> dict:
        """Serve the version that was active before the current one."""
        served = state.store.rollback()
        state.metrics.model_swaps.inc()
        return served.describe()

    @app.post("/v1/models/{version}/activate", tags=["models"], dependencies=[admin])
    def activate(version: Annotated[str, Path(min_length=1, max_length=64)], state: State) -> dict:
        """Serve ``version`` from now on; a corrupted version is refused (409) and the current
        one keeps serving."""
        served = state.store.activate(version)
        state.metrics.model_swaps.inc()
        return served.describe()


async def _follow_store(state: ServingState) -> None:
    while True:
        await asyncio.sleep(state.settings.refresh_interval_s)
        try:
            if await run_in_threadpool(state.store.refresh):
                state.metrics.model_swaps.inc()
        except Exception as exc:  # keep polling whatever happens
            _log_unexpected(exc)


def create_app(
    settings: ServeSettings,
    *,
    clock: Callable[[], float] | None = None,
) -> FastAPI:
    """Build the API for ``settings``: open the databases and load the active model.

    Args:
        settings: What to serve and how.
        clock: Monotonic clock for the rate limiter (tests).

    Raises:
        ArtifactError: No model version could be loaded.
        UnavailableError: The model store is empty.
        ConfigError: An invalid database URL.
    """
    engine = make_engine(settings.database_url)
    store = _open_store(settings)
    store.start()
    metrics = ServingMetrics()
    limiter = (
        RateLimiter(settings.rate_limit, settings.rate_burst)
        if clock is None
        else RateLimiter(settings.rate_limit, settings.rate_burst, clock)
    )
    state = ServingState(
        settings,
        store,
        KeyStore(engine, cache_ttl_s=settings.key_cache_ttl_s),
        EventStore(engine),
        limiter,
        metrics,
    )
    if settings.insecure_dev:
        log.warning("INSECURE DEV MODE: requests are served without API keys")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        poller = asyncio.create_task(_follow_store(state)) if store.root is not None else None
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            _app.state.reranked.close()  # the re-ranked route's compute thread
            engine.dispose()

    from privrank import __version__

    app = FastAPI(
        title="privrank",
        version=__version__,
        description="Privacy-preserving recommendations. Send an API key as "
        "'Authorization: Bearer <key>'.",
        lifespan=lifespan,
        # privrank exports its own Prometheus metrics; FastAPI's OpenTelemetry hooks would
        # only cost a provider check per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.serving = state
    _install_handlers(app)
    _add_routes(app)
    # /v1/search (privrank.serving.search_route): 409 unless --search-model names a model
    add_search_routes(app, require(Scope.READ), settings.search_dir, metrics.registry)
    if settings.console:
        from privrank.serving.console import install_console

        install_console(app, state)
    # innermost: inside the body limits and log
    app.add_middleware(_hot_path, state=state, reranked=app.state.reranked)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """The app for the settings in ``$PRIVRANK_SERVE_SETTINGS`` (JSON; set by ``privrank
    serve`` so that each uvicorn worker builds the same app)."""
    import os

    from privrank.serving.settings import SETTINGS_ENV
    from privrank.serving.supervision import end_with_supervisor

    end_with_supervisor()  # a --workers N worker must not outlive a killed supervisor
    value = os.environ.get(SETTINGS_ENV)
    if not value:
        raise ConfigError(f"{SETTINGS_ENV} is not set; start the server with `privrank serve`")
    return create_app(ServeSettings.model_validate_json(value))
