"""A direct path for the hot read requests, in front of FastAPI's routing.

FastAPI's middleware stack, routing and dependency resolution cost several times what a
recommendation from a FAISS index costs (the profile is in BENCHMARKS.md, "Serving at the
machine's limit"). :class:`HotPathMiddleware` answers the *well-formed* requests of a few POST
routes itself: a JSON body that the route's request model accepts, sent with an API key the
server verified a moment ago (the key cache). It runs the same checks in the same order as the
FastAPI route (the credential, its scope and rate limit through the ``admit`` function the
route's dependency also calls; the same request model; the same answer function) and renders
errors with the same function as the FastAPI exception handler.

Everything else is passed to FastAPI untouched, with the body replayed: a credential that needs
verifying (first use, a user token, an expired cache entry), a body that is not JSON or does not
validate, another content type. So every error answer (401, 422, ...) is FastAPI's own, and the
fast path never decides anything FastAPI would decide differently.

Nothing here logs: the access-log middleware outside it records each request as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from privrank.errors import PrivrankError
from privrank.serving.auth import Principal, Scope

__all__ = ["HotPathMiddleware", "HotRoute"]

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]
Answer = Callable[[Principal, Any], Awaitable[Any]]


@dataclass(frozen=True)
class HotRoute:
    """A POST route the fast path may answer.

    Attributes:
        request_model: The route's body model (validated exactly as FastAPI validates it: the
            decoded JSON value, in Python mode).
        scope: The scope the route's dependency requires.
        answer: The route's answer (an ASGI response), given the principal and the body.
    """

    request_model: type[BaseModel]
    scope: Scope
    answer: Answer


class HotPathMiddleware:
    """Answer well-formed requests with a cached credential on ``routes``; pass the rest on.

    Args:
        app: The FastAPI application (everything not answered here goes to it).
        routes: Path → :class:`HotRoute` (POST only).
        cached_principal: The principal of the request's headers when its credential is in
            the verified-key cache, else ``None`` (then FastAPI authenticates).
        admit: Checks the principal's scope and rate limit (raises
            :class:`~privrank.errors.PrivrankError`); the route's dependency calls it too.
        render_error: The error response the FastAPI handler gives for an exception.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, HotRoute],
        cached_principal: Callable[[list[tuple[bytes, bytes]]], Principal | None],
        admit: Callable[[Principal, Scope], None],
        render_error: Callable[[PrivrankError], Any],
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.cached_principal = cached_principal
        self.admit = admit
        self.render_error = render_error

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST" or not _json_content(scope["headers"]):
            await self.app(scope, receive, send)
            return
        principal = self.cached_principal(scope["headers"])
        if principal is None:
            await self.app(scope, receive, send)
            return
        body, messages, complete = await _read_body(receive)
        request = _parse(route.request_model, body) if complete else None
        if request is None:
            await self.app(scope, _replaying(messages, receive), send)
            return
        scope.setdefault("state", {})["key_name"] = principal.name
        # The access log and the metrics label a request by its route's template; FastAPI sets
        # it on routes it matches, and a request answered here is labelled the same way.
        scope["route"] = _RouteTemplate(scope["path"])
        try:
            self.admit(principal, route.scope)
            response = await route.answer(principal, request)
        except PrivrankError as exc:
            response = self.render_error(exc)
        await response(scope, receive, send)


@dataclass(frozen=True)
class _RouteTemplate:
    """What the access log reads from ``scope["route"]``: the route's template (a hot route's
    path has no parameters, so it is its own template)."""

    path: str


def _json_content(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the first Content-Type header is ``application/json`` (parameters allowed)."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


async def _read_body(receive: Receive) -> tuple[bytes, list[Message], bool]:
    """The whole body, the messages it came in (to replay) and whether it arrived complete
    (``False`` when the client disconnected first)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return b"", messages, False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages, True


def _parse(model: type[BaseModel], body: bytes) -> BaseModel | None:
    """The validated body, or ``None`` when it is not JSON or does not validate."""
    try:
        return model.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives the already-read ``messages`` first, then the client's."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
