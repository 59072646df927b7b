"""The read endpoints, filters, health and metrics through FastAPI's TestClient."""

from __future__ import annotations

from privrank.models import Recommender

from ._util import CLUSTER_A, CLUSTER_B, auth


def test_recommend_known_user_matches_the_model(client, keys, model_dir) -> None:
    response = client.post(
        "/v1/recommend", json={"user_id": "u3", "k": 5}, headers=auth(keys["service"])
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = Recommender.load(model_dir).recommend_for_users(["u3"], 5)
    assert [i["item_id"] for i in body["items"]] == expected.item_ids[0]
    assert "cold_start" not in body  # membership is not part of the answer
    assert body["model_version"] == "ease"
    assert all(item in CLUSTER_A for item in expected.item_ids[0])


def test_recommend_excludes_seen_items_by_default(client, keys, model_dir) -> None:
    model = Recommender.load(model_dir)
    code = int(model.user_codes(["u3"])[0])
    history = model.history_items_[model.history_indptr_[code] : model.history_indptr_[code + 1]]
    seen = {model.item_ids_[int(c)].as_py() for c in history}
    headers = auth(keys["service"])
    everything = client.post(
        "/v1/recommend", json={"user_id": "u3", "k": 30, "exclude_seen": False}, headers=headers
    ).json()
    assert {i["item_id"] for i in everything["items"]} >= seen
    unseen = client.post("/v1/recommend", json={"user_id": "u3", "k": 30}, headers=headers).json()
    returned = {i["item_id"] for i in unseen["items"]}
    assert len(returned) == 30 - len(seen)  # fewer than k are eligible
    assert not returned & seen


def test_unknown_user_gets_the_popularity_fallback_with_rank_scores(
    client, keys, model_dir
) -> None:
    response = client.post(
        "/v1/recommend", json={"user_id": "nobody", "k": 3}, headers=auth(keys["service"])
    )
    assert response.status_code == 200
    body = response.json()
    assert "cold_start" not in body
    expected = Recommender.load(model_dir).recommend_for_histories([[]], 3)
    assert [i["item_id"] for i in body["items"]] == expected.item_ids[0]
    # Not the training counts: scores that only order the popularity ranking.
    assert [i["score"] for i in body["items"]] == [1.0, 1 / 2, 1 / 3]


def test_exclude_and_allow_filters(client, keys) -> None:
    headers = auth(keys["service"])
    allow = [*CLUSTER_B[:4], "not-an-item"]
    body = client.post(
        "/v1/recommend",
        json={"user_id": "u3", "k": 10, "allow": allow, "exclude": [CLUSTER_B[0]]},
        headers=headers,
    ).json()
    returned = [i["item_id"] for i in body["items"]]
    assert sorted(returned) == sorted(CLUSTER_B[1:4])  # fewer than k: only 3 are eligible
    top = client.post("/v1/recommend", json={"user_id": "u3", "k": 3}, headers=headers).json()
    first = top["items"][0]["item_id"]
    again = client.post(
        "/v1/recommend", json={"user_id": "u3", "k": 3, "exclude": [first]}, headers=headers
    ).json()
    assert first not in [i["item_id"] for i in again["items"]]
    empty = client.post(
        "/v1/recommend", json={"user_id": "u3", "k": 3, "allow": []}, headers=headers
    ).json()
    assert empty["items"] == []


def test_history_recommendations_fold_in(client, keys, model_dir) -> None:
    history = CLUSTER_B[:3]
    response = client.post(
        "/v1/recommend/history", json={"history": history, "k": 4}, headers=auth(keys["read"])
    )
    assert response.status_code == 200, response.text
    items = [i["item_id"] for i in response.json()["items"]]
    expected = Recommender.load(model_dir).recommend_for_histories([history], 4)
    assert items == expected.item_ids[0]
    assert not set(items) & set(history)
    assert set(items) <= set(CLUSTER_B)


def test_history_unknown_items_ignored_or_refused(client, keys) -> None:
    headers = auth(keys["read"])
    body = client.post(
        "/v1/recommend/history", json={"history": ["zzz"], "k": 2}, headers=headers
    ).json()
    assert [i["score"] for i in body["items"]] == [1.0, 1 / 2]  # cold: rank scores
    strict = client.post(
        "/v1/recommend/history",
        json={"history": ["zzz"], "k": 2, "ignore_unknown_items": False},
        headers=headers,
    )
    assert strict.status_code == 422
    assert strict.json()["error"] == "invalid_request"


def test_similar_items(client, keys) -> None:
    response = client.get(f"/v1/items/{CLUSTER_A[0]}/similar?k=5", headers=auth(keys["read"]))
    assert response.status_code == 200, response.text
    items = [i["item_id"] for i in response.json()["items"]]
    assert len(items) == 5 and CLUSTER_A[0] not in items
    assert set(items) <= set(CLUSTER_A)
    missing = client.get("/v1/items/999999/similar", headers=auth(keys["read"]))
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_rank_orders_candidates_and_reports_unknown(client, keys, model_dir) -> None:
    candidates = [CLUSTER_B[0], CLUSTER_A[0], "unknown-item", CLUSTER_A[1]]
    response = client.post(
        "/v1/rank", json={"user_id": "u3", "candidates": candidates}, headers=auth(keys["service"])
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["unknown"] == ["unknown-item"]
    ranked = [i["item_id"] for i in body["items"]]
    assert sorted(ranked) == sorted([CLUSTER_B[0], CLUSTER_A[0], CLUSTER_A[1]])
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert ranked[-1] == CLUSTER_B[0]  # u3 lives in cluster A
    by_history = client.post(
        "/v1/rank",
        json={"history": CLUSTER_B[1:4], "candidates": candidates},
        headers=auth(keys["read"]),
    ).json()
    assert by_history["items"][0]["item_id"] == CLUSTER_B[0]


def test_rank_needs_exactly_one_of_user_and_history(client, keys) -> None:
    headers = auth(keys["service"])
    both = client.post(
        "/v1/rank",
        json={"user_id": "u1", "history": [100], "candidates": [100]},
        headers=headers,
    )
    assert both.status_code == 422
    neither = client.post("/v1/rank", json={"candidates": [100]}, headers=headers)
    assert neither.status_code == 422
    repeated = client.post(
        "/v1/rank", json={"user_id": "u1", "candidates": [100, 100]}, headers=headers
    )
    assert repeated.status_code == 422


def test_popularity_model_cannot_relate_items(make_client, popular_dir, keys) -> None:
    client = make_client(model_dir=popular_dir)
    response = client.get(f"/v1/items/{CLUSTER_A[0]}/similar", headers=auth(keys["read"]))
    assert response.status_code == 409


def test_health_readiness_and_metrics(client, keys) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == "ease"
    client.post("/v1/recommend", json={"user_id": "u1"}, headers=auth(keys["service"]))
    assert client.get("/metrics").status_code == 401
    metrics = client.get("/metrics", headers=auth(keys["read"]))
    assert metrics.status_code == 200
    text = metrics.text
    assert 'privrank_http_requests_total{method="POST",route="/v1/recommend",status="200"}' in text
    assert 'privrank_model_active{model="ease",version="ease"} 1.0' in text


def test_openapi_schema_lists_the_versioned_endpoints(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/recommend",
        "/v1/recommend/history",
        "/v1/items/{item_id}/similar",
        "/v1/rank",
        "/v1/events",
        "/v1/models",
        "/v1/models/{version}/activate",
        "/v1/models/rollback",
        "/v1/tokens",
    ):
        assert path in paths
