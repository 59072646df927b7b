"""The operator console: server-rendered pages under ``/console`` of the serving app.

Pages (all but the sign-in need a session):

- ``/console/login``: sign in with an ``admin`` API key (fields ``csrf_token`` and ``api_key``);
- ``/console/models``: the model versions, the active one, activate and roll back, and a
  preview of the active version's answers for a history typed in;
- ``/console/runs``: evaluation runs (``privrank evaluate --out`` directories under the runs
  directory), each with its metric tables and bootstrap CIs beside its PNG charts;
- ``/console/ledger``: the privacy budget ledger (budgets; spends reserved, committed or
  released) and each model's guarantee in plain words, with a warning on every model directory
  that holds the training users' raw histories;
- ``/console/health``: request rate and p50/p99 latency by route, from the app's Prometheus
  metrics;
- ``/console/keys``: API keys; create one (its secret is shown once), revoke one.

**Who is trusted for what.** Anyone holding an ``admin`` key may sign in and then do what the
key may do through the API (activate, roll back) and manage keys; the console grants nothing
more. The privacy pages only *show* what the ledger and the models' verified headers say; the
console spends no privacy budget and computes no guarantee. Sessions, cookies, CSRF and the
response headers are described in :mod:`~.sessions` and :mod:`~.security`.

HTML is rendered by Jinja2 with autoescaping; there is no JavaScript and no front-end build.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from privrank.serving.console.health import HealthWindow
from privrank.serving.console.routes import ConsoleState, SignInRequired, router
from privrank.serving.console.security import ConsoleHeadersMiddleware
from privrank.serving.console.sessions import SessionStore
from privrank.settings import home_dir

__all__ = ["install_console"]

_HERE = Path(__file__).parent


def install_console(app: FastAPI, serving: Any) -> None:
    """Add the console's routes, static files, headers middleware and session store to
    ``app``, which serves with ``serving`` (a :class:`~privrank.serving.app.ServingState`)."""
    settings = serving.settings
    app.state.console = ConsoleState(
        sessions=SessionStore(serving.keys.engine, settings.console_session_ttl_s),
        templates=Jinja2Templates(directory=_HERE / "templates"),
        health=HealthWindow(serving.metrics.registry, time.monotonic()),
        runs_dir=Path(settings.runs_dir) if settings.runs_dir is not None else home_dir() / "runs",
        ledger_url=settings.ledger_url,
    )
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=_HERE / "static"), name="console-static")

    @app.exception_handler(SignInRequired)
    async def sign_in(_request: Request, _exc: SignInRequired) -> RedirectResponse:
        return RedirectResponse("/console/login", status_code=303)

    @app.get("/console", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=303)

    app.add_middleware(ConsoleHeadersMiddleware)
