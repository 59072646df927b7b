"""The console's pages: sign-in, models, evaluation runs, ledger, health, API keys.

Every page but the sign-in needs a session (:mod:`~.sessions`) opened with an ``admin`` key that
is still active; without one, a request is redirected (303) to ``/console/login``. Every form
posts a ``csrf_token`` (:mod:`~.security`); a POST without the right one is refused (403) and
changes nothing. Failed sign-ins count against the same per-address limit as failed API
authentications (429 when spent).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from privrank.errors import ArtifactError, ConfigError, PrivrankError
from privrank.serving import recommend as answers
from privrank.serving.auth import Scope
from privrank.serving.console import ledger_view, runs
from privrank.serving.console.health import HealthWindow
from privrank.serving.console.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    set_cookie,
)
from privrank.serving.console.sessions import ConsoleSession, SessionStore, same_token
from privrank.serving.errors import NotFoundError, UnavailableError

__all__ = ["ConsoleState", "SignInRequired", "router"]

_LOGIN_CSRF_MAX_AGE = 3600
_MAX_PREVIEW_ITEMS = 100
MAX_PREVIEW_K = 50


class SignInRequired(Exception):
    """The request has no valid console session (answered with a redirect to the login)."""


@dataclass
class ConsoleState:
    """What the console pages share.

    Attributes:
        sessions: The session store.
        templates: The Jinja2 templates.
        health: The metrics window of the health page.
        runs_dir: Where evaluation runs and trained models are looked for.
        ledger_url: The ledger shown (``None``: the default).
    """

    sessions: SessionStore
    templates: Jinja2Templates
    health: HealthWindow
    runs_dir: Path
    ledger_url: str | None


@dataclass(frozen=True)
class SignedIn:
    """A request's valid session."""

    session: ConsoleSession


def _console(request: Request) -> ConsoleState:
    return request.app.state.console


def _serving(request: Request) -> Any:
    return request.app.state.serving


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "-"


async def signed_in(request: Request) -> SignedIn:
    """The request's session: open, unexpired, and its admin key still active.

    Raises:
        SignInRequired: Otherwise (the handler redirects to the login page).
    """
    console, serving = _console(request), _serving(request)
    session = await run_in_threadpool(console.sessions.get, request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired
    key = await run_in_threadpool(serving.keys.active_key, session.key_name)
    if key is None or not key.scope.grants(Scope.ADMIN):
        raise SignInRequired
    return SignedIn(session)


Session = Annotated[SignedIn, Depends(signed_in)]
CsrfField = Annotated[str | None, Form()]


def _page(
    request: Request,
    template: str,
    who: SignedIn | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    context.setdefault("notice", None)
    context.setdefault("error", None)
    return _console(request).templates.TemplateResponse(
        request,
        template,
        {
            "csrf_token": None if who is None else who.session.csrf_token,
            "key_name": None if who is None else who.session.key_name,
            **context,
        },
        status_code=status_code,
    )


def _refuse_csrf(request: Request, who: SignedIn | None) -> HTMLResponse:
    return _page(
        request,
        "refused.html",
        who,
        status_code=403,
        error="The form's CSRF token is missing or does not match this session; nothing was "
        "changed. Reload the page and try again.",
    )


def _check_csrf(request: Request, who: SignedIn, presented: str | None) -> HTMLResponse | None:
    """``None`` when ``presented`` is the session's CSRF token, else the 403 page."""
    if same_token(presented, who.session.csrf_token):
        return None
    return _refuse_csrf(request, who)


router = APIRouter(prefix="/console", include_in_schema=False)


# ------------------------------------------------------------------ sign-in and sign-out
def _login_page(request: Request, status_code: int = 200, error: str | None = None) -> Response:
    token = secrets.token_urlsafe(32)
    response = _page(
        request, "login.html", None, status_code=status_code, login_csrf=token, error=error
    )
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, _LOGIN_CSRF_MAX_AGE)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    """The sign-in form (a fresh double-submit CSRF token in the form and a cookie)."""
    console = _console(request)
    session = await run_in_threadpool(console.sessions.get, request.cookies.get(SESSION_COOKIE))
    if session is not None:
        return RedirectResponse("/console/", status_code=303)
    return _login_page(request)


@router.post("/login")
async def login(
    request: Request,
    csrf_token: CsrfField = None,
    api_key: Annotated[str | None, Form()] = None,
) -> Response:
    """Open a session for an active ``admin`` key."""
    if not same_token(csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE)):
        return _login_page(
            request,
            403,
            "The sign-in form's CSRF token is missing or does not match; nothing was done. "
            "Sign in from this page.",
        )
    serving, console = _serving(request), _console(request)
    address = _address(request)
    wait = serving.failures.acquire(address)
    if wait > 0:
        serving.metrics.rate_limited.inc()
        return _login_page(request, 429, "Too many failed sign-ins from this address; wait.")
    raw = (api_key or "").strip()
    key = await run_in_threadpool(serving.keys.verify, raw) if raw else None
    if key is None or not key.scope.grants(Scope.ADMIN):
        serving.metrics.auth_failures.labels("401").inc()
        return _login_page(
            request, 401, "Sign-in refused: the key is unknown, revoked, or not an admin key."
        )
    serving.failures.refund(address)
    session_id, _session = await run_in_threadpool(console.sessions.open, key.name)
    response = RedirectResponse("/console/", status_code=303)
    set_cookie(request, response, SESSION_COOKIE, session_id, int(console.sessions.ttl_s))
    clear_cookie(request, response, LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, who: Session, csrf_token: CsrfField = None) -> Response:
    """End the session."""
    refused = _check_csrf(request, who, csrf_token)
    if refused is not None:
        return refused
    await run_in_threadpool(_console(request).sessions.close, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response


@router.get("/")
async def home(who: Session) -> Response:
    """The console opens on the models page."""
    return RedirectResponse("/console/models", status_code=303)


# ------------------------------------------------------------------ models
def _preview(served: Any, history: str | None, k: int) -> dict[str, Any] | None:
    if history is None or not history.strip():
        return None
    items = [item.strip() for item in history.split(",") if item.strip()]
    if len(items) > _MAX_PREVIEW_ITEMS:
        raise ConfigError(f"a preview history holds at most {_MAX_PREVIEW_ITEMS} items")
    answer = answers.recommend_history(served, items, k, ignore_unknown_items=True)
    known = [item for item in items if served.items.code(item) >= 0]
    return {
        "history": ", ".join(items),
        "known": len(known),
        "asked": len(items),
        "items": list(zip(answer.item_ids, answer.scores, strict=True)),
        "version": served.version,
    }


def _models_context(request: Request, history: str | None, k: int) -> dict[str, Any]:
    serving = _serving(request)
    store = serving.store
    try:
        served = store.current
    except UnavailableError:
        served = None
    preview = None
    preview_error = None
    if served is not None:
        try:
            preview = _preview(served, history, k)
        except PrivrankError as exc:
            preview_error = str(exc)
    return {
        "active": None if served is None else served.describe(),
        "versions": store.versions(),
        "switchable": store.root is not None,
        "preview": preview,
        "preview_error": preview_error,
        "history": history or "",
        "k": k,
    }


@router.get("/models")
async def models(
    request: Request,
    who: Session,
    history: Annotated[str | None, Query(max_length=10_000)] = None,
    k: Annotated[int, Query(ge=1, le=MAX_PREVIEW_K)] = 10,
) -> Response:
    """The model versions, the active one, and a preview of its answers for a history."""
    context = await run_in_threadpool(_models_context, request, history, k)
    return _page(request, "models.html", who, **context)


async def _model_action(
    request: Request, who: SignedIn, csrf_token: str | None, action: Any, done: str
) -> Response:
    refused = _check_csrf(request, who, csrf_token)
    if refused is not None:
        return refused
    serving = _serving(request)
    status_code, notice, error = 200, None, None
    try:
        served = await run_in_threadpool(action, serving.store)
        serving.metrics.model_swaps.inc()
        notice = done.format(version=served.version)
    except (NotFoundError, ArtifactError, PrivrankError) as exc:
        status_code = 404 if isinstance(exc, NotFoundError) else 409
        error = str(exc)
    context = await run_in_threadpool(_models_context, request, None, 10)
    return _page(
        request,
        "models.html",
        who,
        status_code=status_code,
        notice=notice,
        error=error,
        **context,
    )


@router.post("/models/activate")
async def activate(
    request: Request,
    who: Session,
    csrf_token: CsrfField = None,
    version: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Serve ``version`` from now on (a version failing its checks is refused)."""
    return await _model_action(
        request,
        who,
        csrf_token,
        lambda store: store.activate(version),
        "Version {version} is now active.",
    )


@router.post("/models/rollback")
async def rollback(request: Request, who: Session, csrf_token: CsrfField = None) -> Response:
    """Serve the version that was active before the current one."""
    return await _model_action(
        request,
        who,
        csrf_token,
        lambda store: store.rollback(),
        "Rolled back: version {version} is now active.",
    )


# ------------------------------------------------------------------ evaluation runs
@router.get("/runs")
async def runs_list(request: Request, who: Session) -> Response:
    """The evaluation runs in the runs directory, newest first."""
    console = _console(request)
    found = await run_in_threadpool(runs.find_runs, console.runs_dir)
    return _page(request, "runs.html", who, runs=found, runs_dir=console.runs_dir)


@router.get("/runs/{run}")
async def run_page(request: Request, who: Session, run: str) -> Response:
    """One run: per protocol, the metrics with CIs and the charts side by side."""
    console = _console(request)
    try:
        detail = await run_in_threadpool(runs.run_detail, console.runs_dir, run)
    except NotFoundError as exc:
        return _page(request, "refused.html", who, status_code=404, error=str(exc))
    except ArtifactError as exc:
        return _page(request, "refused.html", who, status_code=409, error=str(exc))
    return _page(request, "run.html", who, run=detail)


@router.get("/runs/{run}/plots/{file}")
async def run_plot(request: Request, who: Session, run: str, file: str) -> Response:
    """A chart of a run (a PNG written by ``privrank evaluate``)."""
    try:
        path = runs.plot_path(_console(request).runs_dir, run, file)
    except NotFoundError as exc:
        return _page(request, "refused.html", who, status_code=404, error=str(exc))
    return FileResponse(path, media_type="image/png")


# ------------------------------------------------------------------ the privacy ledger
def _ledger_context(request: Request) -> dict[str, Any]:
    console, store = _console(request), _serving(request).store
    ledger_error = None
    try:
        book = ledger_view.read_ledger(console.ledger_url)
    except PrivrankError as exc:
        book, ledger_error = None, f"the ledger cannot be read: {type(exc).__name__}"
    models = [(f"store version {v.version}", v.path) for v in store.versions()]
    models += [(f"runs/{path.name}", path) for path in runs.find_trained(console.runs_dir)]
    return {
        "ledger": book,
        "ledger_error": ledger_error,
        "guarantees": ledger_view.guarantees(models),
    }


@router.get("/ledger")
async def ledger(request: Request, who: Session) -> Response:
    """Budgets, spends (reserved, committed, released) and each model's guarantee."""
    context = await run_in_threadpool(_ledger_context, request)
    return _page(request, "ledger.html", who, **context)


# ------------------------------------------------------------------ serving health
@router.get("/health")
async def health(request: Request, who: Session) -> Response:
    """Request rate and p50/p99 latency by route, from this process's Prometheus metrics."""
    serving = _serving(request)
    try:
        active = serving.store.current.version
    except UnavailableError:
        active = None
    look = _console(request).health.look()
    return _page(request, "health.html", who, active=active, **look)


# ------------------------------------------------------------------ API keys
def _keys_page(request: Request, who: SignedIn, status_code: int = 200, **context: Any) -> Response:
    keys = _serving(request).keys.list()
    return _page(
        request,
        "keys.html",
        who,
        status_code=status_code,
        keys=keys,
        scopes=[s.value for s in Scope],
        **context,
    )


@router.get("/keys")
async def keys_page(request: Request, who: Session) -> Response:
    """Every API key (revoked ones included), a form to create one and one to revoke each."""
    return await run_in_threadpool(_keys_page, request, who)


@router.post("/keys/create")
async def create_key(
    request: Request,
    who: Session,
    csrf_token: CsrfField = None,
    name: Annotated[str, Form(max_length=64)] = "",
    scope: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """Create a key; its secret is shown on this response only."""
    refused = _check_csrf(request, who, csrf_token)
    if refused is not None:
        return refused
    keys = _serving(request).keys
    try:
        created = await run_in_threadpool(keys.create, scope, name.strip() or None)
    except ConfigError as exc:
        return await run_in_threadpool(_keys_page, request, who, 422, error=str(exc))
    return await run_in_threadpool(
        _keys_page,
        request,
        who,
        created=created,
        notice=f"Key {created.key.name} created with scope {created.key.scope.value}.",
    )


@router.post("/keys/revoke")
async def revoke_key(
    request: Request,
    who: Session,
    csrf_token: CsrfField = None,
    name: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Revoke a key (and the user tokens it minted)."""
    refused = _check_csrf(request, who, csrf_token)
    if refused is not None:
        return refused
    keys = _serving(request).keys
    try:
        revoked = await run_in_threadpool(keys.revoke, name)
    except NotFoundError as exc:
        return await run_in_threadpool(_keys_page, request, who, 404, error=str(exc))
    if revoked.name == who.session.key_name:
        response = RedirectResponse("/console/login", status_code=303)
        clear_cookie(request, response, SESSION_COOKIE)
        return response
    return await run_in_threadpool(
        _keys_page, request, who, notice=f"Key {revoked.name} is revoked."
    )
