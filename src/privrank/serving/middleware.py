"""ASGI middleware: the request body limits (size and read time) and the privacy-safe access log
with metrics.

The access log records the method, the route *template* (``/v1/items/{item_id}/similar``, never
the concrete path), the status, the latency and the API key's name. It never records bodies,
query strings, user ids, item ids or histories.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from privrank.serving.metrics import ServingMetrics

__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "AccessLogMiddleware",
    "BodySizeLimitMiddleware",
    "json_error",
    "log_unexpected",
]

DEFAULT_BODY_TIMEOUT_S = 10.0
"""Seconds a client has to deliver a whole request body (1 MiB in 10 s is 100 KiB/s)."""

access_log = logging.getLogger("privrank.serving.access")
error_log = logging.getLogger("privrank.serving")


def log_unexpected(logger: logging.Logger, exc: BaseException) -> None:
    """Log an unexpected error by type and place only: its message and the values in its
    traceback may hold request data (user ids, histories)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-4:]))
    logger.error("unexpected %s at %s", type(exc).__name__, where or "?")


def json_error(
    status: int, error: str, message: str, *, close: bool = False, **extra: Any
) -> tuple[dict, bytes]:
    """The start message and body of a JSON error response (for raw ASGI code); ``close`` adds
    ``Connection: close`` (the server then closes the connection after the answer)."""
    body = json.dumps({"error": error, "message": message, **extra}).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if close:
        headers.append((b"connection", b"close"))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, body


class BodySizeLimitMiddleware:
    """Answer 413 to a request body larger than ``max_bytes``, and 408 to one not delivered in
    ``body_timeout_s`` seconds.

    A declared ``Content-Length`` over the limit is refused before reading anything; a chunked
    body is counted as it arrives and refused as soon as it passes the limit.

    The read timeout is one deadline for the whole body, counted from the application's first
    read of it, so neither a client that declares more bytes than it sends nor one that trickles
    them can hold a connection (and a worker's attention) open. When it passes, the client gets
    ``408 {"error": "request_timeout", ...}`` with ``Connection: close``, and the application
    sees a disconnected client. Waiting for a disconnect *after* the body is complete is not
    timed.

    Args:
        app: The ASGI application.
        max_bytes: The largest request body accepted.
        body_timeout_s: Seconds the client has to deliver the body (> 0); ``None``: no limit.
    """

    def __init__(
        self, app, max_bytes: int, body_timeout_s: float | None = DEFAULT_BODY_TIMEOUT_S
    ) -> None:
        if body_timeout_s is not None and not (
            isinstance(body_timeout_s, int | float) and 0 < body_timeout_s < float("inf")
        ):
            raise ValueError(
                "The 'body_timeout_s' parameter of BodySizeLimitMiddleware must be a finite "
                f"number > 0 or None. Got {body_timeout_s!r}"
            )
        self.app = app
        self.max_bytes = int(max_bytes)
        self.body_timeout_s = None if body_timeout_s is None else float(body_timeout_s)

    async def _refuse(self, send, status: int = 413, message: str | None = None) -> None:
        error = {413: "payload_too_large", 408: "request_timeout"}.get(status, "bad_request")
        start, body = json_error(
            status,
            error,
            message or f"the request body exceeds the limit of {self.max_bytes} bytes",
            close=status == 408,
        )
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def _receive_in_time(self, receive, deadline: float) -> dict | None:
        """The next message, or ``None`` when ``deadline`` (the event loop's clock) passed
        first. ``asyncio.timeout_at`` rather than an anyio cancel scope: the server runs on
        asyncio (uvicorn), and anyio's scope bookkeeping cost a tenth of a request's CPU."""
        try:
            async with asyncio.timeout_at(deadline):
                return await receive()
        except TimeoutError:
            return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(send, 400, "invalid Content-Length header")
                    return
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        received = 0
        started = refused = body_done = False
        deadline: float | None = None

        async def limited_receive():
            nonlocal received, refused, body_done, deadline
            if refused:
                return {"type": "http.disconnect"}
            if body_done or self.body_timeout_s is None:
                message = await receive()
            else:
                if deadline is None:
                    deadline = asyncio.get_running_loop().time() + self.body_timeout_s
                message = await self._receive_in_time(receive, deadline)
                if message is None:
                    # The app sees a disconnected client; its answer (if any) is dropped.
                    refused = True
                    if not started:
                        await self._refuse(
                            send,
                            408,
                            f"the request body did not arrive within {self.body_timeout_s:g} s",
                        )
                    return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                body_done = body_done or not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_bytes and not started:
                    # Answer now; the app sees a disconnected client and its answer is dropped.
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


class AccessLogMiddleware:
    """Log one privacy-safe line per request and record it in the Prometheus metrics.

    It also answers 500 to an unexpected error itself (logged by :func:`log_unexpected`), so the
    error never reaches the server's own handler, which would log its message and traceback.
    """

    def __init__(self, app, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        responded = False

        async def tracking_send(message):
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log_unexpected(error_log, exc)
            if not responded:
                start, body = json_error(500, "internal_error", "internal server error")
                await send(start)
                await send({"type": "http.response.body", "body": body})
            status = 500
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            state = scope.get("state") or {}
            key_name = state.get("key_name", "-")
            self.metrics.observe(scope["method"], template, status, elapsed)
            access_log.info(
                "%s %s %d %.1fms key=%s",
                scope["method"],
                template,
                status,
                elapsed * 1000,
                key_name,
            )
