"""The console's HTTP hardening: response headers, cookies and the CSRF checks.

Every response under ``/console`` (pages, redirects, charts, the stylesheet) carries
:data:`SECURITY_HEADERS`: a Content-Security-Policy that allows no script at all (the console
is plain HTML forms), styles and images from this server only, forms posting only back here and
no framing; ``nosniff``; no referrer; and ``Cache-Control: no-store`` (a page may show a new API
key once, and none should stay in a shared cache).

Cookies are ``HttpOnly`` (no script can read them), ``SameSite=Strict`` (never sent on a request
started from another site), scoped to ``/console`` and ``Secure`` when the request came over
HTTPS. Behind a TLS-terminating proxy the scheme comes from its ``X-Forwarded-Proto`` header,
which ``privrank serve`` (uvicorn) trusts from 127.0.0.1 only (uvicorn's ``forwarded_allow_ips``).

**CSRF.** Every form carries a ``csrf_token`` field. Signed in, it must equal the session's own
token (kept on the server, :mod:`~.sessions`). The sign-in form, used before any session exists,
is protected by a double-submit token: the login page sets a random token in an ``HttpOnly``
cookie and the same value in the form, and the sign-in is refused unless both arrive and match.
Both comparisons are constant-time. ``SameSite=Strict`` is a second, independent defence.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from privrank.serving.middleware import log_unexpected

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "LOGIN_CSRF_COOKIE",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "ConsoleHeadersMiddleware",
    "set_cookie",
]

PREFIX = "/console"
SESSION_COOKIE = "privrank_console_session"
LOGIN_CSRF_COOKIE = "privrank_console_login_csrf"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_RAW_HEADERS = [
    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()
]
_NAMES = {name for name, _ in _RAW_HEADERS}
_FAILED = b"<!doctype html><title>Error</title><p>The console failed to answer; see the server log."
log = logging.getLogger("privrank.serving.console")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """Set a console cookie: HttpOnly, SameSite=Strict, path ``/console``, Secure over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    """Delete a console cookie (same attributes as :func:`set_cookie`)."""
    response.delete_cookie(
        name,
        path=PREFIX,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


class ConsoleHeadersMiddleware:
    """Add :data:`SECURITY_HEADERS` to every response under ``/console`` (replacing any
    same-named header), whatever produced it: a page, a redirect, a file or an error. An
    unexpected exception is logged by type and place only (:func:`log_unexpected`) and
    answered here with a bare 500 page that carries the headers too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() not in _NAMES]
                message = {**message, "headers": headers + _RAW_HEADERS}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            log_unexpected(log, exc)
            if started:
                raise
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(_FAILED)).encode("ascii")),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _FAILED})
