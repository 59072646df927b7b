"""The console over plain HTTP (TestClient): sessions, cookies, CSRF, security headers and what
each page shows, checked against the ledger, the store and the result files read directly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from privrank.cli.serve import settings_from_options
from privrank.errors import ConfigError
from privrank.privacy.ledger import Ledger, SpendStatus
from privrank.serving import KeyStore, ServeSettings, make_engine
from privrank.serving.app import create_app
from privrank.serving.console.security import CONTENT_SECURITY_POLICY
from privrank.serving.console.sessions import sessions_table

from .._util import auth
from ._html import field, text
from ._workspace import HISTORY, Workspace

PAGES = ["/console/", "/console/models", "/console/runs", "/console/runs/eval-ease",
         "/console/ledger", "/console/health", "/console/keys",
         "/console/runs/eval-ease/plots/ease.comparison.png"]  # fmt: skip


def _app(workspace: Workspace, **overrides):
    settings = {
        "store_dir": workspace.store,
        "database_url": workspace.database_url,
        "runs_dir": workspace.runs,
        "ledger_url": f"sqlite:///{workspace.home / 'ledger.sqlite'}",
        **overrides,
    }
    return create_app(ServeSettings(**settings))


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    with TestClient(_app(workspace), follow_redirects=False) as client:
        yield client
    # every test starts on v1
    from privrank.serving import ModelStore

    ModelStore(workspace.store).activate("v1")


def sign_in(client: TestClient, key: str) -> TestClient:
    page = client.get("/console/login")
    done = client.post(
        "/console/login", data={"csrf_token": field(page.text, "csrf_token"), "api_key": key}
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/", done.text
    return client


def csrf(client: TestClient) -> str:
    token = field(client.get("/console/keys").text, "csrf_token")
    assert token
    return token


def test_pages_need_a_session(client: TestClient) -> None:
    for page in PAGES:
        answer = client.get(page)
        assert answer.status_code == 303, page
        assert answer.headers["location"] == "/console/login", page
    assert client.get("/console").headers["location"] == "/console/"
    for form in ("/console/models/activate", "/console/keys/create", "/console/keys/revoke"):
        answer = client.post(form, data={"csrf_token": "x", "version": "v2", "name": "n"})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"


def test_every_console_response_carries_the_security_headers(
    client: TestClient, workspace: Workspace
) -> None:
    def check(answer) -> None:
        headers = answer.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'none'" in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"

    check(client.get("/console/login"))
    check(client.get("/console/models"))  # a redirect
    check(client.get("/console/static/console.css"))
    sign_in(client, workspace.admin_key)
    for page in PAGES:
        check(client.get(page))
    check(client.get("/console/runs/eval-ease/plots/nothing.png"))  # 404
    assert "content-security-policy" not in client.get("/healthz").headers  # the API untouched


def test_login_form_and_cookie_attributes(client: TestClient, workspace: Workspace) -> None:
    page = client.get("/console/login")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert field(page.text, "api_key") is not None
    token = field(page.text, "csrf_token")
    assert token and len(token) >= 40
    assert "<script" not in page.text
    login_cookie = page.headers["set-cookie"]
    assert login_cookie.startswith("privrank_console_login_csrf=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/console"):
        assert attribute.lower() in login_cookie.lower()
    assert "secure" not in login_cookie.lower()  # plain http
    done = client.post("/console/login", data={"csrf_token": token, "api_key": workspace.admin_key})
    cookies = done.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("privrank_console_session="))
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/console", "Max-Age=28800"):
        assert attribute.lower() in session.lower()
    assert any(c.startswith("privrank_console_login_csrf=") and "Max-Age=0" in c for c in cookies)


def test_the_session_cookie_is_secure_over_https(workspace: Workspace) -> None:
    with TestClient(
        _app(workspace), base_url="https://testserver", follow_redirects=False
    ) as client:
        page = client.get("/console/login")
        assert "; secure" in page.headers["set-cookie"].lower()
        done = client.post(
            "/console/login",
            data={"csrf_token": field(page.text, "csrf_token"), "api_key": workspace.admin_key},
        )
        session = next(
            c for c in done.headers.get_list("set-cookie") if c.startswith("privrank_console_s")
        )
        assert "; secure" in session.lower()


def test_sign_in_without_the_csrf_token_is_refused(client: TestClient, workspace: Workspace):
    client.get("/console/login")  # the double-submit cookie is set
    for data in (
        {"api_key": workspace.admin_key},
        {"api_key": workspace.admin_key, "csrf_token": ""},
        {"api_key": workspace.admin_key, "csrf_token": "forged-token-forged-token-forged-123"},
    ):
        done = client.post("/console/login", data=data)
        assert done.status_code == 403
        assert "CSRF token is missing or does not match" in text(done.text)
        assert "privrank_console_session" not in done.headers.get("set-cookie", "")
    # the token of the form without its cookie (a request forged from another site)
    token = field(client.get("/console/login").text, "csrf_token")
    client.cookies.clear()
    done = client.post("/console/login", data={"csrf_token": token, "api_key": workspace.admin_key})
    assert done.status_code == 403


def test_wrong_and_non_admin_keys_are_refused(client: TestClient, workspace: Workspace) -> None:
    wrong = workspace.admin_key[:-4] + "AAAA"
    for key in (wrong, "not-a-key", workspace.service_key, ""):
        page = client.get("/console/login")
        done = client.post(
            "/console/login", data={"csrf_token": field(page.text, "csrf_token"), "api_key": key}
        )
        assert done.status_code == 401, key
        assert "Sign-in refused" in text(done.text)
        assert "privrank_console_session=" not in done.headers.get("set-cookie", "")
    assert client.get("/console/ledger").status_code == 303


def test_failed_sign_ins_are_rate_limited(workspace: Workspace) -> None:
    app = _app(workspace, auth_failure_rate=0.001, auth_failure_burst=2)
    with TestClient(app, follow_redirects=False) as client:
        statuses = []
        for _ in range(4):
            page = client.get("/console/login")
            token = field(page.text, "csrf_token")
            statuses.append(
                client.post(
                    "/console/login", data={"csrf_token": token, "api_key": "bad"}
                ).status_code
            )
        assert statuses == [401, 401, 429, 429]


def test_the_ledger_page_shows_budgets_spends_and_guarantees(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, workspace.admin_key)
    page = client.get("/console/ledger")
    assert page.status_code == 200
    shown = text(page.text)
    with Ledger(f"sqlite:///{workspace.home / 'ledger.sqlite'}") as book:
        (budget,) = book.budgets()
        spends = book.spends()
    # by hand: 3 in total, 2 committed (the DP fit), 0.25 reserved (a crash), 0.5 released
    assert (budget.epsilon, budget.epsilon_spent, budget.epsilon_reserved) == (3.0, 2.0, 0.25)
    assert "tiny 3 2 0.25 0.75" in shown
    assert sorted(s.status for s in spends) == [
        SpendStatus.committed, SpendStatus.released, SpendStatus.reserved]  # fmt: skip
    for spend in spends:
        assert f"{spend.description} " in shown
    assert "a run that crashed 0.25 0.0001 reserved" in shown
    assert "a run given back 0.5 0.0001 released" in shown
    # each model's guarantee in plain words; raw histories flagged
    assert "store version v3 · ease private" in shown
    assert "guarantees (ε=2" in shown or "guarantees (ε = 2" in shown or "ε=2" in shown
    assert "The unit of privacy is one user's entire history" in shown
    assert "runs/dp-ease · ease private" in shown
    assert "store version v1 · ease not-private" in shown
    assert "NOT differentially private" in shown
    warnings = shown.count("Warning: this artifact holds raw histories.")
    # v1 (EASE), v2 (most-popular) and the train outputs ease, popular, dp-ease; not the release
    assert warnings == 5
    assert "This is a release artifact: it holds no training user ids" in shown


def test_forms_without_the_csrf_token_change_nothing(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, workspace.admin_key)
    forms = [
        ("/console/models/activate", {"version": "v2"}),
        ("/console/models/rollback", {}),
        ("/console/keys/create", {"name": "sneaky", "scope": "admin"}),
        ("/console/keys/revoke", {"name": "backend"}),
        ("/console/logout", {}),
    ]
    for url, data in forms:
        for token in (None, "", "x" * 43):
            sent = data if token is None else {**data, "csrf_token": token}
            done = client.post(url, data=sent)
            assert done.status_code == 403, (url, token)
            assert "CSRF token is missing or does not match" in text(done.text)
    assert "Active: v1" in text(client.get("/console/models").text)
    keys = {k.name: k for k in KeyStore(make_engine(workspace.database_url)).list()}
    assert "sneaky" not in keys and keys["backend"].active
    assert client.get("/console/ledger").status_code == 200  # still signed in


def _answer(client: TestClient, workspace: Workspace) -> tuple[str, list]:
    done = client.post(
        "/v1/recommend/history",
        json={"history": HISTORY, "k": 5},
        headers=auth(workspace.service_key),
    )
    assert done.status_code == 200, done.text
    body = done.json()
    return body["model_version"], [item["item_id"] for item in body["items"]]


def test_activate_and_roll_back_change_the_answers(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, workspace.admin_key)
    before = _answer(client, workspace)
    token = csrf(client)
    page = client.post("/console/models/activate", data={"csrf_token": token, "version": "v2"})
    assert page.status_code == 200 and "Version v2 is now active." in text(page.text)
    after = _answer(client, workspace)
    assert before[0] == "v1" and after[0] == "v2" and before[1] != after[1]
    # the preview shows the served model's answer, the API's items in the same order
    preview = client.get("/console/models", params={"history": ",".join(HISTORY), "k": 5})
    items = [cell.split("<")[0] for cell in preview.text.split('<td class="item">')[1:]]
    assert [str(i) for i in after[1]] == items
    page = client.post("/console/models/rollback", data={"csrf_token": token})
    assert "Rolled back: version v1 is now active." in text(page.text)
    assert _answer(client, workspace) == before
    missing = client.post("/console/models/activate", data={"csrf_token": token, "version": "v9"})
    assert missing.status_code == 404 and "no model version 'v9'" in text(missing.text)


def test_an_expired_session_redirects_to_the_login(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, workspace.admin_key)
    assert client.get("/console/ledger").status_code == 200
    engine = make_engine(workspace.database_url)
    with engine.begin() as conn:
        conn.execute(
            update(sessions_table).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    engine.dispose()
    answer = client.get("/console/ledger")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"


def test_sign_out_ends_the_session_on_the_server(client: TestClient, workspace: Workspace):
    sign_in(client, workspace.admin_key)
    cookie = client.cookies.get("privrank_console_session")
    done = client.post("/console/logout", data={"csrf_token": csrf(client)})
    assert done.status_code == 303 and done.headers["location"] == "/console/login"
    client.cookies.set("privrank_console_session", cookie, path="/console")  # replayed
    assert client.get("/console/ledger").status_code == 303


def test_a_key_created_is_shown_once_and_a_revoked_key_is_refused(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, workspace.admin_key)
    token = csrf(client)
    page = client.post(
        "/console/keys/create", data={"csrf_token": token, "name": "once", "scope": "read"}
    )
    assert page.status_code == 200
    secret = page.text.split('<pre id="new-key">')[1].split("</pre>")[0]
    assert secret.startswith("prk_")
    assert secret not in client.get("/console/keys").text  # shown once
    ok = client.get("/v1/models", headers=auth(secret))
    assert ok.status_code == 200
    page = client.post("/console/keys/revoke", data={"csrf_token": token, "name": "once"})
    assert "Key once is revoked." in text(page.text)
    assert client.get("/v1/models", headers=auth(secret)).status_code == 401
    bad = client.post(
        "/console/keys/create", data={"csrf_token": token, "name": "no spaces", "scope": "read"}
    )
    assert bad.status_code == 422 and "a key name must be" in text(bad.text)


def test_revoking_the_signed_in_key_ends_the_session(workspace: Workspace) -> None:
    engine = make_engine(workspace.database_url)
    second = KeyStore(engine).create("admin", "second-admin").secret
    engine.dispose()
    with TestClient(_app(workspace), follow_redirects=False) as client:
        sign_in(client, second)
        done = client.post(
            "/console/keys/revoke", data={"csrf_token": csrf(client), "name": "second-admin"}
        )
        assert done.status_code == 303 and done.headers["location"] == "/console/login"
        assert client.get("/console/keys").status_code == 303


def test_the_run_page_shows_the_result_files_numbers_and_charts(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, workspace.admin_key)
    listing = text(client.get("/console/runs").text)
    assert "eval-ease" in listing
    page = client.get("/console/runs/eval-ease")
    assert page.status_code == 200
    shown = text(page.text)
    summary = json.loads((workspace.runs / "eval-ease" / "summary.json").read_text())
    (result_file,) = summary["results"]
    result = json.loads((workspace.runs / "eval-ease" / result_file).read_text())
    for metric in result["headline"]:
        ci = result["metrics"][metric]
        assert f"{ci['estimate']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}]" in shown
    images = [p.name for p in (workspace.runs / "eval-ease").glob("*.png")]
    assert len(images) == 2
    for name in images:
        assert f'src="/console/runs/eval-ease/plots/{name}"' in page.text
        png = client.get(f"/console/runs/eval-ease/plots/{name}")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content == (workspace.runs / "eval-ease" / name).read_bytes()
    bad_urls = [
        "/console/runs/..%2F..%2Fserving.sqlite",
        "/console/runs/eval-ease/plots/..%2Fx.png",
        "/console/runs/eval-ease/plots/summary.json",
        "/console/runs/nothing",
    ]
    for bad in bad_urls:
        assert client.get(bad).status_code == 404, bad


def test_the_health_page_counts_the_api_requests(client: TestClient, workspace: Workspace):
    sign_in(client, workspace.admin_key)
    client.get("/console/health")
    for _ in range(7):
        _answer(client, workspace)
    page = text(client.get("/console/health").text)
    assert "/v1/recommend/history 7 0" in page
    assert "Since the previous look" in page and "Since the process started" in page


def test_values_from_the_ledger_are_escaped(workspace: Workspace, tmp_path) -> None:
    """A spend's description is text the ledger took from a run: it is shown escaped."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("<b>set</b>", 1.0, 1e-3)
        book.reserve("<b>set</b>", epsilon=0.5, delta=1e-4, description='<img src=x onerror="1">')
    with TestClient(_app(workspace, ledger_url=url), follow_redirects=False) as client:
        sign_in(client, workspace.admin_key)
        page = client.get("/console/ledger").text
    assert "<img src=x" not in page and "<b>set</b>" not in page
    assert "&lt;img src=x onerror=&#34;1&#34;&gt;" in page and "&lt;b&gt;set&lt;/b&gt;" in page


def test_the_console_can_be_left_out(workspace: Workspace) -> None:
    with TestClient(_app(workspace, console=False), follow_redirects=False) as client:
        assert client.get("/console/login").status_code == 404
        assert client.get("/console/static/console.css").status_code == 404
        assert client.get("/healthz").status_code == 200


def test_serve_options_reach_the_console_settings(workspace: Workspace) -> None:
    settings = settings_from_options(
        store_dir=workspace.store,
        console=False,
        runs_dir=workspace.runs,
        ledger_url="sqlite:///elsewhere.sqlite",
        console_session_ttl_s=60.0,
    )
    assert settings.console is False and settings.runs_dir == workspace.runs
    assert settings.ledger_url == "sqlite:///elsewhere.sqlite"
    assert settings.console_session_ttl_s == 60.0
    with pytest.raises(ConfigError, match="--console-session-ttl"):
        settings_from_options(store_dir=workspace.store, console_session_ttl_s=0.0)
