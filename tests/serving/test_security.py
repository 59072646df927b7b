"""Every security behaviour of the API: 401, 403, 429 + Retry-After, 413, 422 naming the field,
no ids or histories in logs, constant-time key comparison, failed authentications limited per
address before verification, 401 before 422, no paths or database URLs in error bodies."""

from __future__ import annotations

import hmac
import logging

import pytest

from privrank.serving import KeyStore, make_engine
from privrank.serving import auth as auth_module

from ._util import CLUSTER_A, auth


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ 401 / 403
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}, {"X-API-Key": ""}],
    ids=["none", "empty-bearer", "basic", "empty-x-api-key"],
)
def test_no_key_is_401(client, keys, headers) -> None:
    response = client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"


def test_wrong_or_forged_key_is_401(client, keys) -> None:
    real = keys["admin"]
    forged = real[:-1] + ("A" if real[-1] != "A" else "B")  # right id, wrong secret
    for key in ("nonsense", forged, "prk_000000000000_" + "x" * 43):
        response = client.post("/v1/recommend", json={"user_id": "u1"}, headers=auth(key))
        assert response.status_code == 401, key


def test_x_api_key_header_is_accepted(client, keys) -> None:
    response = client.post(
        "/v1/recommend", json={"user_id": "u1"}, headers={"X-API-Key": keys["service"]}
    )
    assert response.status_code == 200


def test_wrong_scope_is_403(client, keys) -> None:
    event = {
        "events": [
            {"event_id": "e1", "user_id": "u1", "item_id": 100, "timestamp": "2026-01-01T00:00:00Z"}
        ]
    }
    assert client.post("/v1/events", json=event, headers=auth(keys["read"])).status_code == 403
    assert client.post("/v1/events", json=event, headers=auth(keys["write"])).status_code == 200
    for path in ("/v1/models/ease/activate", "/v1/models/rollback"):
        for scope in ("read", "write"):
            response = client.post(path, headers=auth(keys[scope]))
            assert response.status_code == 403, (path, scope)
            assert response.json()["error"] == "forbidden"
    # Scopes are ordered: admin may read and write too.
    assert (
        client.post(
            "/v1/recommend", json={"user_id": "u1"}, headers=auth(keys["admin"])
        ).status_code
        == 200
    )


def test_revoked_key_is_refused(client, keys, database_url) -> None:
    headers = auth(keys["service"])
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers).status_code == 200
    client.app.state.serving.keys.revoke("service-key")
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers).status_code == 401


def test_key_revoked_by_another_process_is_refused_after_the_cache_ttl(
    make_client, model_dir, keys, database_url
) -> None:
    client = make_client(model_dir=model_dir, key_cache_ttl_s=0)
    headers = auth(keys["service"])
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers).status_code == 200
    engine = make_engine(database_url)
    KeyStore(engine).revoke("service-key")  # as `privrank keys revoke` would
    engine.dispose()
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers).status_code == 401


def test_health_needs_no_key(client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_insecure_dev_mode_needs_no_key(make_client, model_dir) -> None:
    client = make_client(model_dir=model_dir, insecure_dev=True)
    assert client.post("/v1/recommend", json={"user_id": "u1"}).status_code == 200
    assert client.post("/v1/models/rollback").status_code == 409  # admin allowed; nothing to do


# ------------------------------------------------------------------ constant time, hashing
def test_keys_are_compared_in_constant_time(client, keys, monkeypatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    headers = auth(keys["write"])
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers).status_code == 200
    assert calls == [(32, 32)]
    calls.clear()
    bad = auth(keys["write"][:-2] + "zz")
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=bad).status_code == 401
    assert calls == [(32, 32)]


# ------------------------------------------------------------------ 429
def test_rate_limit_is_429_with_retry_after(make_client, model_dir, keys) -> None:
    clock = FakeClock()
    client = make_client(model_dir=model_dir, rate_limit=0.5, rate_burst=3, clock=clock)
    headers = auth(keys["service"])
    codes = [
        client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    refused = client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"  # one token takes 1 / 0.5 s
    assert refused.json()["error"] == "rate_limited"
    # Another key has its own bucket.
    assert (
        client.post(
            "/v1/recommend", json={"user_id": "u1"}, headers=auth(keys["admin"])
        ).status_code
        == 200
    )
    clock.now += 2.0
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=headers).status_code == 200
    assert (
        "privrank_rate_limited_requests_total 2.0"
        in client.get("/metrics", headers=auth(keys["admin"])).text
    )


# ------------------------------------------------------------------ 413
def test_oversized_body_is_413(make_client, model_dir, keys) -> None:
    client = make_client(model_dir=model_dir, max_body_bytes=2048)
    big = {"history": list(range(100, 130)) * 50, "k": 3}
    response = client.post("/v1/recommend/history", json=big, headers=auth(keys["read"]))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    small = client.post(
        "/v1/recommend/history", json={"history": [100], "k": 3}, headers=auth(keys["read"])
    )
    assert small.status_code == 200


def test_oversized_chunked_body_is_413(make_client, model_dir, keys) -> None:
    client = make_client(model_dir=model_dir, max_body_bytes=2048)

    def chunks():
        yield b'{"history": ['
        for _ in range(500):
            yield b"100, "
        yield b"100]}"

    headers = {**auth(keys["read"]), "content-type": "application/json"}
    response = client.post("/v1/recommend/history", content=chunks(), headers=headers)
    assert response.status_code == 413


# ------------------------------------------------------------------ 422
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/recommend", {"user_id": "u1", "k": "5"}, "k"),
        ("/v1/recommend", {"user_id": "u1", "k": 0}, "k"),
        ("/v1/recommend", {"user_id": "u1", "k": 100000}, "k"),
        ("/v1/recommend", {"k": 5}, "user_id"),
        ("/v1/recommend", {"user_id": "u1", "colour": "red"}, "colour"),
        ("/v1/recommend", {"user_id": "u1", "exclude_seen": 1}, "exclude_seen"),
        ("/v1/recommend", {"user_id": "u1", "exclude": [1.5]}, "exclude.0"),
        ("/v1/recommend/history", {"history": "100"}, "history"),
        ("/v1/rank", {"user_id": "u1", "candidates": []}, "candidates"),
        (
            "/v1/events",
            {"events": [{"event_id": "e", "user_id": 1, "item_id": 1, "timestamp": "2026-01-01"}]},
            "events.0.timestamp",
        ),
        (
            "/v1/events",
            {
                "events": [
                    {
                        "event_id": "e e",
                        "user_id": 1,
                        "item_id": 1,
                        "timestamp": "2026-01-01T00:00:00Z",
                    }
                ]
            },
            "events.0.event_id",
        ),
    ],
)
def test_invalid_requests_are_422_naming_the_field(client, keys, path, body, field) -> None:
    response = client.post(path, json=body, headers=auth(keys["admin"]))
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] == "validation_error"
    assert field in [f["field"] for f in payload["fields"]]
    assert field in payload["message"]


def test_malformed_json_is_422(client, keys) -> None:
    headers = {**auth(keys["read"]), "content-type": "application/json"}
    response = client.post("/v1/recommend", content=b'{"user_id": ', headers=headers)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


def test_malformed_json_without_a_valid_key_is_401_not_422(client, keys) -> None:
    for headers in ({}, auth("prk_000000000000_" + "x" * 43)):
        headers = {**headers, "content-type": "application/json"}
        response = client.post("/v1/recommend", content=b'{"user_id": ', headers=headers)
        assert response.status_code == 401, response.text
        wrong_type = client.post("/v1/recommend", json={"user_id": [1]}, headers=headers)
        assert wrong_type.status_code == 401


def test_failed_authentications_are_limited_per_address_before_verification(
    make_client, model_dir, keys, monkeypatch
) -> None:
    client = make_client(model_dir=model_dir, auth_failure_rate=0.001, auth_failure_burst=3)
    good = auth(keys["service"])
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=good).status_code == 200
    state = client.app.state.serving
    verified = []
    real_verify = state.keys.verify
    monkeypatch.setattr(state.keys, "verify", lambda raw: verified.append(1) or real_verify(raw))
    bad = auth("prk_000000000000_" + "x" * 43)
    codes = [
        client.post("/v1/recommend", json={"user_id": "u1"}, headers=bad).status_code
        for _ in range(6)
    ]
    assert codes == [401, 401, 401, 429, 429, 429]
    assert len(verified) == 3  # refused before any verification once the bucket is empty
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=good).status_code == 200


def test_a_burst_with_one_uncached_key_shares_one_verification(
    make_client, model_dir, keys, monkeypatch
) -> None:
    """Valid requests that arrive together before their key is cached are not refused as a
    burst of failed authentications (they used to take one failure token each: 429 under
    load with the rate limit off), and they cost one verification."""
    import asyncio
    import time

    import httpx

    client = make_client(model_dir=model_dir, auth_failure_rate=0.001, auth_failure_burst=2)
    state = client.app.state.serving
    verified = []
    real_verify = state.keys.verify

    def slow_verify(raw):
        verified.append(1)
        time.sleep(0.3)  # every request below arrives while this one is in flight
        return real_verify(raw)

    monkeypatch.setattr(state.keys, "verify", slow_verify)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/v1/recommend", json={"user_id": "u1"}, headers=auth(keys["service"])
                    )
                    for _ in range(8)
                )
            )
        return [a.status_code for a in answers]

    assert asyncio.run(burst()) == [200] * 8
    assert len(verified) == 1
    # The leader's token was given back: bad credentials still get their full burst.
    bad = auth("prk_000000000000_" + "y" * 43)
    codes = [
        client.post("/v1/recommend", json={"user_id": "u1"}, headers=bad).status_code
        for _ in range(3)
    ]
    assert codes == [401, 401, 429]


def test_error_bodies_hold_no_paths_checksums_or_database_urls() -> None:
    from privrank.serving.app import redact

    text = (
        "/srv/privrank/store/versions/v1/arrays.safetensors: checksum mismatch (recorded sha256 "
        + "ab" * 32
        + ") in postgresql://admin:pw@db.internal:5432/privrank"
    )
    cleaned = redact(text)
    assert "/srv" not in cleaned and "ab" * 32 not in cleaned and "pw@" not in cleaned
    assert "arrays.safetensors" in cleaned


def test_readiness_does_not_echo_the_database(make_client, model_dir, monkeypatch) -> None:
    from privrank.serving.errors import StorageError

    client = make_client(model_dir=model_dir)

    def down() -> None:
        raise StorageError("event store postgresql://admin:pw@db.internal/privrank: refused")

    monkeypatch.setattr(client.app.state.serving.events, "ping", down)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "reason": "the database does not answer"}


def test_validation_errors_do_not_echo_values(client, keys) -> None:
    secret_user = "user-secret-7f3a"
    response = client.post(
        "/v1/recommend", json={"user_id": secret_user, "k": "x"}, headers=auth(keys["read"])
    )
    assert response.status_code == 422
    assert secret_user not in response.text


# ------------------------------------------------------------------ logs
def test_logs_never_hold_user_ids_or_histories(client, keys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    user = "user-3c9e1d-private"
    history_item = CLUSTER_A[7]
    headers = auth(keys["admin"])
    requests = [
        ("/v1/recommend", {"user_id": user, "k": 3}),
        ("/v1/recommend", {"user_id": user, "k": "bad"}),
        ("/v1/recommend/history", {"history": [history_item, "hist-secret-91b2"], "k": 3}),
        ("/v1/recommend/history", {"history": ["hist-secret-91b2"], "ignore_unknown_items": False}),
        ("/v1/rank", {"history": ["hist-secret-91b2"], "candidates": [history_item]}),
        ("/v1/rank", {"user_id": user, "history": ["hist-secret-91b2"], "candidates": [100]}),
        (
            "/v1/events",
            {
                "events": [
                    {
                        "event_id": "ev-1",
                        "user_id": user,
                        "item_id": history_item,
                        "timestamp": "2026-01-01T00:00:00Z",
                    }
                ]
            },
        ),
    ]
    for path, body in requests:
        client.post(path, json=body, headers=headers)
    client.get("/v1/items/hist-secret-91b2/similar", headers=headers)
    # Everything the server side logged (the test's own HTTP client logs URLs; it is not the
    # server).
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert records, "the access log should have recorded the requests"
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records)
    assert user not in text
    assert "hist-secret-91b2" not in text
    assert "/v1/items/{item_id}/similar" in text  # the route template, not the concrete path


def test_unexpected_errors_are_500_and_logged_without_their_message(
    client, keys, caplog, monkeypatch
) -> None:
    from privrank.serving import recommend

    def broken(model, user_id, *args, **kwargs):
        raise RuntimeError(f"something failed for {user_id}")

    monkeypatch.setattr(recommend, "recommend_user", broken)
    caplog.set_level(logging.DEBUG)
    response = client.post(
        "/v1/recommend", json={"user_id": "user-0d5e-private"}, headers=auth(keys["service"])
    )
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "message": "internal server error"}
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "unexpected RuntimeError" in text
    assert "user-0d5e-private" not in text
    assert "user-0d5e-private" not in "\n".join(r.exc_text or "" for r in caplog.records)
