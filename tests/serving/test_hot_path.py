"""The hot path in front of FastAPI (privrank.serving.hot_path): it answers well-formed requests
with a cached key exactly as the FastAPI routes do, and hands everything else to them."""

from __future__ import annotations

import pytest

from privrank.serving.hot_path import HotPathMiddleware

from ._util import auth


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _count_fastapi_calls(client) -> list[str]:
    """Wrap what the hot path hands requests to; the list gets each handed-on path."""
    client.get("/healthz")  # builds the middleware stack
    layer = client.app.middleware_stack
    while not isinstance(layer, HotPathMiddleware):
        layer = layer.app
    downstream, handed = layer.app, []

    async def counting(scope, receive, send):
        handed.append(scope["path"])
        await downstream(scope, receive, send)

    layer.app = counting
    return handed


@pytest.fixture
def pair(make_client, model_dir, keys):
    """Two clients on the same model: one with the hot path, one whose hot path hands every
    request to FastAPI (its key cache is never consulted)."""
    hot = make_client(model_dir=model_dir)
    cold = make_client(model_dir=model_dir, key_cache_ttl_s=0)
    return hot, cold


REQUESTS = [
    ("/v1/recommend", {"user_id": "u3", "k": 5}),
    ("/v1/recommend", {"user_id": "nobody", "k": 3}),
    ("/v1/recommend", {"user_id": "u3", "k": 4, "allow": [100, 101, 102, 900], "exclude": [101]}),
    ("/v1/recommend/history", {"history": [100, 101], "k": 4}),
    ("/v1/rank", {"user_id": "u3", "candidates": [100, "x", 101, 130]}),
    ("/v1/rank", {"history": [100], "candidates": [101, 102]}),
    # Errors: validation (422), a bound (403), a refused fold-in or id mix-up (4xx).
    ("/v1/recommend", {"user_id": "u3", "k": 0}),
    ("/v1/recommend", {"user_id": "u3", "k": 5, "surprise": 1}),
    ("/v1/recommend/history", {"history": ["not-an-item"], "ignore_unknown_items": False}),
    ("/v1/rank", {"user_id": "u3", "history": [100], "candidates": [101]}),
    ("/v1/rank", {"user_id": "u3", "candidates": [101, 101]}),
]


def test_every_answer_and_error_is_the_routes_own(pair, keys) -> None:
    hot, cold = pair
    handed = _count_fastapi_calls(hot)
    for key in ("service", "read"):
        headers = auth(keys[key])
        hot.post("/v1/recommend", json={"user_id": "u3"}, headers=headers)  # caches the key
        handed.clear()
        for path, body in REQUESTS:
            fast = hot.post(path, json=body, headers=headers)
            slow = cold.post(path, json=body, headers=headers)
            assert (fast.status_code, fast.json()) == (slow.status_code, slow.json()), (path, body)
            assert fast.headers["content-type"] == slow.headers["content-type"]
        # Only what does not validate went on to FastAPI (it makes the 422s).
        assert len(handed) == sum(1 for _, b in REQUESTS if b.get("k") == 0 or "surprise" in b)


def test_a_key_is_verified_by_fastapi_first_and_then_answered_directly(pair, keys) -> None:
    hot, _ = pair
    handed = _count_fastapi_calls(hot)
    headers = auth(keys["service"])
    first = hot.post("/v1/recommend", json={"user_id": "u3"}, headers=headers)
    second = hot.post("/v1/recommend", json={"user_id": "u3"}, headers=headers)
    assert first.json() == second.json()
    assert handed == ["/v1/recommend"]  # only the first, which verified the key


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer prk_nope_nope"},
        {"Authorization": "Basic abc"},
        {"X-API-Key": " "},
    ],
)
def test_missing_or_unknown_credentials_are_fastapis_401(pair, headers) -> None:
    hot, cold = pair
    handed = _count_fastapi_calls(hot)
    fast = hot.post("/v1/recommend", json={"user_id": "u3"}, headers=headers)
    slow = cold.post("/v1/recommend", json={"user_id": "u3"}, headers=headers)
    assert fast.status_code == slow.status_code == 401
    assert fast.json() == slow.json()
    assert handed == ["/v1/recommend"]


def test_non_json_bodies_and_other_methods_go_to_fastapi(pair, keys) -> None:
    hot, cold = pair
    headers = auth(keys["service"])
    hot.post("/v1/recommend", json={"user_id": "u3"}, headers=headers)
    handed = _count_fastapi_calls(hot)
    cases = [
        dict(content=b'{"user_id": "u3"', headers={**headers, "content-type": "application/json"}),
        dict(content=b'{"user_id": NaN}', headers={**headers, "content-type": "application/json"}),
        dict(content=b'{"user_id": "u3"}', headers={**headers, "content-type": "text/plain"}),
    ]
    for case in cases:
        fast, slow = hot.post("/v1/recommend", **case), cold.post("/v1/recommend", **case)
        assert (fast.status_code, fast.json()) == (slow.status_code, slow.json())
    assert hot.get("/v1/recommend", headers=headers).status_code == 405
    assert handed == ["/v1/recommend"] * 3 + ["/v1/recommend"]


def test_scope_and_user_checks_hold_on_the_hot_path(pair, keys) -> None:
    hot, cold = pair
    read = auth(keys["read"])
    hot.post("/v1/recommend/history", json={"history": [100]}, headers=read)  # caches it
    handed = _count_fastapi_calls(hot)
    for client in (hot, cold):
        denied = client.post("/v1/recommend", json={"user_id": "u3"}, headers=read)
        assert denied.status_code == 403 and "service" in denied.json()["message"]
        too_big = client.post(
            "/v1/recommend/history", json={"history": [100], "k": 101}, headers=read
        )
        assert too_big.status_code == 403 and "k: 101" in too_big.json()["message"]
    assert handed == []


def test_the_rate_limit_is_charged_once_per_request(make_client, model_dir, keys) -> None:
    clock = Clock()
    client = make_client(model_dir=model_dir, clock=clock, rate_limit=1.0, rate_burst=3)
    headers = auth(keys["service"])
    statuses = [
        client.post("/v1/recommend", json={"user_id": "u3"}, headers=headers).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    limited = client.post("/v1/recommend", json={"user_id": "u3"}, headers=headers)
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["error"] == "rate_limited"
    clock.now += 1.0
    assert client.post("/v1/recommend", json={"user_id": "u3"}, headers=headers).status_code == 200


def test_requests_answered_by_the_hot_path_are_labelled_by_their_route(pair, keys) -> None:
    """The metrics (and so the console's health page) count a hot-path answer under its route,
    as FastAPI's answer to the same request is counted, never as ``unmatched``."""
    hot, cold = pair
    handed = _count_fastapi_calls(hot)
    for client in (hot, cold):
        for _ in range(3):
            done = client.post(
                "/v1/recommend", json={"user_id": "u3", "k": 5}, headers=auth(keys["service"])
            )
            assert done.status_code == 200
    assert handed == ["/v1/recommend"]  # the first (its key not yet cached); then the hot path
    for client in (hot, cold):
        counter = client.app.state.serving.metrics.requests
        assert counter.labels("POST", "/v1/recommend", "200")._value.get() == 3
        assert counter.labels("POST", "unmatched", "200")._value.get() == 0
