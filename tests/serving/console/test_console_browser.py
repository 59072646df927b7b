"""The console in a real browser: Playwright driving Debian's Chromium against a real
``privrank serve`` process (one per module), on a workspace built with the privrank commands.

Scenarios: sign in and read the ledger; activate a version and see the answers change (in the
console's preview and through the API); create a key, use it, revoke it and see it refused.
Failure paths: a wrong key, an expired session, a form without its CSRF token. No page may
trip the Content-Security-Policy. Screenshots go to ``test-artifacts/console/`` (ignored by
git). Chromium comes from Debian (``make test`` installs it); Playwright never downloads one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from sqlalchemy import update

from privrank.serving import make_engine
from privrank.serving.console.sessions import sessions_table

from ._workspace import HISTORY, Workspace

pytestmark = pytest.mark.browser

CLI = [
    sys.executable,
    "-c",
    "import privrank.cli.keys, privrank.cli.serve; from privrank.cli.main import app; app()",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(base: str, path: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    """One API request with ``key`` (urllib: outside the browser)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data)
    request.add_header("content-type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_ready(base: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"privrank serve exited: {process.communicate(timeout=30)[1]}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("privrank serve did not become ready")


@pytest.fixture(scope="module")
def stack(workspace: Workspace) -> Iterator[tuple[str, Browser]]:
    """``privrank serve --store`` with the console on a free loopback port, and Debian's
    Chromium (headless, driven by Playwright); the browser starts while the server loads."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed: run `make test` (it installs it) or "
            "`apt-get install chromium`"
        )
    port = _free_port()
    command = [
        *CLI, "serve", "--store", str(workspace.store), "--database", workspace.database_url,
        "--runs", str(workspace.runs), "--ledger", f"sqlite:///{workspace.home / 'ledger.sqlite'}",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True)
            try:
                _wait_ready(base, process)
                yield base, browser
            finally:
                browser.close()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=30)


@pytest.fixture
def server(stack: tuple[str, Browser]) -> str:
    return stack[0]


@pytest.fixture
def browser(stack: tuple[str, Browser]) -> Browser:
    return stack[1]


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where screenshots go: ``test-artifacts/console`` under the repository root."""
    folder = request.config.rootpath / "test-artifacts" / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Shots:
    """Takes numbered screenshots of a test's page into the artifacts folder."""

    def __init__(self, page: Page, folder: Path, test: str) -> None:
        self.page, self.folder, self.test, self.count = page, folder, test, 0

    def __call__(self, label: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.test}-{self.count:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def context(browser: Browser, server: str) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) per test."""
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 800})
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page that must not trip the Content-Security-Policy."""
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    assert violations == [], violations


@pytest.fixture
def shot(page: Page, artifacts: Path, request: pytest.FixtureRequest) -> Shots:
    return Shots(page, artifacts, request.node.name.removeprefix("test_"))


def sign_in(page: Page, key: str) -> None:
    page.goto("/console/login")
    page.fill("#api_key", key)
    page.click("button:has-text('Sign in')")
    expect(page).to_have_url(f"{page.url.split('/console')[0]}/console/models")


def preview(page: Page) -> list[str]:
    page.fill("#history", ",".join(HISTORY))
    page.fill("#k", "5")
    page.click("button:has-text('Recommend')")
    return page.locator("#preview td.item").all_inner_texts()


def test_sign_in_and_read_the_ledger(page: Page, shot: Shots, workspace: Workspace) -> None:
    page.goto("/console/ledger")
    expect(page).to_have_url(f"{page.url.split('/console')[0]}/console/login")
    assert page.locator("input[name=csrf_token]").count() == 1
    assert page.locator("input[name=api_key]").get_attribute("type") == "password"
    shot("login")
    sign_in(page, workspace.admin_key)
    shot("models")
    page.click("nav >> text=Privacy ledger")
    expect(page.locator("h1")).to_have_text("Privacy ledger")
    budget = page.locator("#budgets tbody tr").first.inner_text().split()
    assert budget[:5] == ["tiny", "3", "2", "0.25", "0.75"]  # by hand: 3 - 2 - 0.25
    statuses = page.locator("#spends .status").all_inner_texts()
    assert sorted(statuses) == ["committed", "released", "reserved"]
    expect(page.locator("article.guarantee").first).to_be_visible()
    assert page.locator("text=Warning: this artifact holds raw histories.").count() == 5
    release = page.locator("article.guarantee", has_text="store version v3")
    expect(release).to_contain_text("The unit of privacy is one user's entire history")
    expect(release.locator(".status")).to_have_text("private")
    shot("ledger")


def test_a_wrong_key_is_refused(page: Page, shot: Shots, workspace: Workspace) -> None:
    page.goto("/console/login")
    page.fill("#api_key", workspace.admin_key[:-4] + "AAAA")
    page.click("button:has-text('Sign in')")
    expect(page.locator(".error")).to_contain_text("Sign-in refused")
    shot("wrong-key")
    page.fill("#api_key", workspace.service_key)  # valid, but not an admin key
    page.click("button:has-text('Sign in')")
    expect(page.locator(".error")).to_contain_text("not an admin key")
    page.goto("/console/keys")
    expect(page).to_have_url(f"{page.url.split('/console')[0]}/console/login")


def test_activate_a_version_and_see_the_answers_change(
    page: Page, shot: Shots, server: str, workspace: Workspace
) -> None:
    sign_in(page, workspace.admin_key)
    expect(page.locator("#active-version")).to_have_text("v1")
    before = preview(page)
    status, answer = api(
        server, "/v1/recommend/history", workspace.service_key, {"history": HISTORY, "k": 5}
    )
    assert status == 200 and answer["model_version"] == "v1"
    assert before == [str(item["item_id"]) for item in answer["items"]]
    shot("v1-answers")
    page.click("button:has-text('Activate v2')")
    expect(page.locator(".notice")).to_have_text("Version v2 is now active.")
    expect(page.locator("#active-version")).to_have_text("v2")
    after = preview(page)
    shot("v2-answers")
    status, answer = api(
        server, "/v1/recommend/history", workspace.service_key, {"history": HISTORY, "k": 5}
    )
    assert status == 200 and answer["model_version"] == "v2"
    assert after == [str(item["item_id"]) for item in answer["items"]]
    assert after != before
    page.click("button:has-text('Roll back')")
    expect(page.locator(".notice")).to_have_text("Rolled back: version v1 is now active.")
    assert preview(page) == before
    assert api(server, "/v1/models", workspace.service_key)[1]["active"]["version"] == "v1"


def test_revoke_a_key_and_see_it_refused(
    page: Page, shot: Shots, server: str, workspace: Workspace
) -> None:
    sign_in(page, workspace.admin_key)
    page.click("nav >> text=API keys")
    page.fill("#name", "browser-made")
    page.select_option("#scope", "service")
    page.click("button:has-text('Create')")
    secret = page.locator("#new-key").inner_text().strip()
    assert secret.startswith("prk_")
    shot("created")
    status, _ = api(server, "/v1/recommend", secret, {"user_id": "u1", "k": 3})
    assert status == 200
    page.reload()
    assert secret not in page.content()  # shown once
    page.click("button:has-text('Revoke browser-made')")
    expect(page.locator(".notice")).to_have_text("Key browser-made is revoked.")
    row = page.locator("#keys tr", has_text="browser-made")
    expect(row).to_contain_text("revoked")
    shot("revoked")
    status, body = api(server, "/v1/recommend", secret, {"user_id": "u1", "k": 3})
    assert status == 401 and body["error"] == "unauthorized"


def test_an_expired_session_goes_back_to_the_login(
    page: Page, shot: Shots, workspace: Workspace
) -> None:
    sign_in(page, workspace.admin_key)
    page.goto("/console/health")
    expect(page.locator("h1")).to_have_text("Serving health")
    expect(page.locator("#health-total tr.total")).to_be_visible()
    shot("health")
    engine = make_engine(workspace.database_url)
    with engine.begin() as conn:  # the server's clock passes every session's expiry
        conn.execute(
            update(sessions_table).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    engine.dispose()
    page.reload()
    expect(page).to_have_url(f"{page.url.split('/console')[0]}/console/login")
    shot("expired")


def test_a_form_without_its_csrf_token_is_refused(
    page: Page, context: BrowserContext, shot: Shots, server: str, workspace: Workspace
) -> None:
    sign_in(page, workspace.admin_key)
    # a form posted with the session cookie but without the token: refused, nothing changes
    forged = context.request.post(
        "/console/models/activate", form={"version": "v2"}, max_redirects=0
    )
    assert forged.status == 403 and "CSRF token is missing" in forged.text()
    # the page's own form, its token field removed
    form = page.locator("form[action='/console/models/activate']").first
    form.locator("input[name=csrf_token]").evaluate("field => field.remove()")
    form.locator("button").click()
    expect(page.locator(".error")).to_contain_text("CSRF token is missing or does not match")
    shot("csrf-refused")
    assert api(server, "/v1/models", workspace.service_key)[1]["active"]["version"] == "v1"


def test_an_evaluation_run_shows_tables_beside_its_charts(
    page: Page, shot: Shots, workspace: Workspace
) -> None:
    sign_in(page, workspace.admin_key)
    page.click("nav >> text=Evaluations")
    page.click("text=eval-ease")
    expect(page.locator("table.metrics")).to_be_visible()
    images = page.locator(".plots img")
    assert images.count() == 2
    page.wait_for_load_state("load")  # the images are fetched after the HTML: wait for them
    for i in range(2):  # loaded and drawn (natural size known)
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    table_box = page.locator(".tables").bounding_box()
    plot_box = page.locator(".plots").bounding_box()
    assert table_box and plot_box and plot_box["x"] > table_box["x"]  # side by side
    shot("run")


def test_behind_a_tls_proxy_the_cookies_are_secure(server: str) -> None:
    """uvicorn takes the scheme from a proxy on 127.0.0.1 (``X-Forwarded-Proto``): the console's
    cookies are then ``Secure``; over plain HTTP they are not (a browser would drop them)."""
    plain = urllib.request.urlopen(f"{server}/console/login", timeout=10)
    assert "secure" not in plain.headers["set-cookie"].lower()
    request = urllib.request.Request(f"{server}/console/login")
    request.add_header("X-Forwarded-Proto", "https")
    with urllib.request.urlopen(request, timeout=10) as answer:
        cookie = answer.headers["set-cookie"].lower()
    assert "; secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
