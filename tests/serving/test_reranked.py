"""``POST /v1/recommend/reranked``: the served two-stage model's order, stage metrics, the
ranker's latency budget (fallback to retrieval order, counted) and refusals."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import privrank.ranking  # noqa: F401  (registers two-stage)
from privrank.models import FitOptions, Query, create_model

from ._util import auth, cluster_interactions
from .test_hot_path import _count_fastapi_calls

pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    directory = tmp_path_factory.mktemp("two-stage") / "model"
    model = create_model(
        "two-stage",
        {
            "candidates": 15,
            "retrievers": [
                {"name": "ease", "params": {"regularization": 10.0}},
                {"name": "itemknn"},
            ],
            "ranker_params": {"num_iterations": 10, "min_data_in_leaf": 5},
        },
    ).fit(cluster_interactions(), FitOptions(threads=1))
    model.save(directory)
    return model, directory


def _expected(model, user_id, k):
    code = model.user_codes([user_id])
    items, ranked, valid = model.rerank(Query.users(code))
    order = np.argsort(-np.where(valid[0], ranked[0], -np.inf), kind="stable")[:k]
    return model.item_ids_.take(items[0][order]).to_pylist(), items[0][valid[0]][:k]


def test_answers_in_the_rankers_order_and_reports_stages(make_client, two_stage, keys):
    model, directory = two_stage
    client = make_client(model_dir=directory)
    user = model.user_ids_[0].as_py()
    answer = client.post(
        "/v1/recommend/reranked",
        json={"user_id": user, "k": 5, "ranker_budget_ms": 5000, "total_budget_ms": 10000},
        headers=auth(keys["service"]),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected, _ = _expected(model, user, 5)
    assert [i["item_id"] for i in body["items"]] == expected
    assert body["fallback"] is False
    metrics = client.get("/metrics", headers=auth(keys["admin"])).text
    for stage in ("retrieval", "features", "ranker"):
        assert f'privrank_two_stage_stage_seconds_count{{stage="{stage}"}} 1.0' in metrics


def test_over_budget_falls_back_to_retrieval_order_and_counts(make_client, two_stage, keys):
    model, directory = two_stage
    client = make_client(model_dir=directory)
    user = model.user_ids_[1].as_py()
    answer = client.post(
        "/v1/recommend/reranked",
        json={"user_id": user, "k": 5, "ranker_budget_ms": 1e-6, "total_budget_ms": 10000},
        headers=auth(keys["service"]),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    _, retrieval = _expected(model, user, 5)
    assert body["fallback"] is True
    assert [i["item_id"] for i in body["items"]] == model.item_ids_.take(retrieval).to_pylist()
    metrics = client.get("/metrics", headers=auth(keys["admin"])).text
    assert 'privrank_two_stage_ranker_fallbacks_total{reason="timeout"} 1.0' in metrics


def _compute_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("privrank-two-stage")]


def test_a_ranker_past_its_deadline_is_answered_without_at_the_deadline(
    make_client, two_stage, keys
):
    """The ranker runs in the request's one job, right after the features, and takes longer
    than its budget: the client gets the retrieval order at the deadline (not when the ranker
    ends), the fallback is counted, the late result is dropped (no ranker time observed), and
    one compute thread keeps serving."""
    model, directory = two_stage
    client = make_client(model_dir=directory)
    answer = client.app.state.reranked
    served = client.app.state.serving.store.current.model
    release, ranker_done = threading.Event(), threading.Event()
    ranker_calls: list[int] = []
    rank = served.rank

    def slow_rank(candidates, threads=None):
        ranker_calls.append(1)
        release.wait(30)
        out = rank(candidates, threads=threads)
        ranker_done.set()
        return out

    served.rank = slow_rank
    others = set(_compute_threads())  # earlier tests' servers (stopping, or stopped)
    user = model.user_ids_[2].as_py()
    _, retrieval = _expected(model, user, 5)
    body = {"user_id": user, "k": 5, "ranker_budget_ms": 200, "total_budget_ms": 10000}
    for round_ in range(3):
        release.clear()
        ranker_done.clear()
        answer_ = client.post("/v1/recommend/reranked", json=body, headers=auth(keys["service"]))
        assert not ranker_done.is_set()  # answered while the ranker was still running
        assert answer_.status_code == 200, answer_.text
        got = answer_.json()
        assert got["fallback"] is True
        assert [i["item_id"] for i in got["items"]] == model.item_ids_.take(retrieval).to_pylist()
        assert len([t for t in _compute_threads() if t not in others]) == 1
        release.set()
        answer.executor.submit(lambda: None).result(timeout=30)  # the late ranker has ended
        assert ranker_done.is_set() and ranker_calls == [1] * (round_ + 1)
        metrics = client.get("/metrics", headers=auth(keys["admin"])).text
        assert (
            f'privrank_two_stage_ranker_fallbacks_total{{reason="timeout"}} {round_ + 1}.0'
        ) in metrics
        assert 'privrank_two_stage_stage_seconds_count{stage="ranker"}' not in metrics
    served.rank = rank
    answer_ = client.post(
        "/v1/recommend/reranked",
        json={**body, "ranker_budget_ms": 5000},
        headers=auth(keys["service"]),
    )
    assert answer_.json()["fallback"] is False  # the thread is still serving
    (thread,) = [t for t in _compute_threads() if t not in others]
    client.__exit__(None, None, None)  # the server's shutdown stops its compute thread
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_no_time_left_after_the_features_skips_the_ranker(make_client, two_stage, keys):
    """Retrieval and features (here slowed down) use the whole request budget: the ranker
    never runs, and the fallback is counted as ``no_time_left``."""
    model, directory = two_stage
    client = make_client(model_dir=directory)
    answer = client.app.state.reranked
    served = client.app.state.serving.store.current.model
    ranker_calls: list[int] = []
    featurize, rank = served.featurize, served.rank

    def slow_featurize(query, scores):
        threading.Event().wait(0.05)
        return featurize(query, scores)

    def counted_rank(candidates, threads=None):
        ranker_calls.append(1)
        return rank(candidates, threads=threads)

    served.featurize, served.rank = slow_featurize, counted_rank
    user = model.user_ids_[3].as_py()
    _, retrieval = _expected(model, user, 4)
    body = {"user_id": user, "k": 4, "ranker_budget_ms": 5000, "total_budget_ms": 20}
    got = client.post("/v1/recommend/reranked", json=body, headers=auth(keys["service"])).json()
    answer.executor.submit(lambda: None).result(timeout=30)  # the job has ended
    served.featurize, served.rank = featurize, rank
    assert got["fallback"] is True
    assert [i["item_id"] for i in got["items"]] == model.item_ids_.take(retrieval).to_pylist()
    assert ranker_calls == []
    metrics = client.get("/metrics", headers=auth(keys["admin"])).text
    assert 'privrank_two_stage_ranker_fallbacks_total{reason="no_time_left"} 1.0' in metrics


def test_refuses_a_model_that_is_not_two_stage(client, keys):
    answer = client.post(
        "/v1/recommend/reranked", json={"user_id": "u1", "k": 3}, headers=auth(keys["service"])
    )
    assert answer.status_code == 409


def test_the_hot_path_answers_as_the_route_does(make_client, two_stage, keys):
    model, directory = two_stage
    hot = make_client(model_dir=directory)
    cold = make_client(model_dir=directory, key_cache_ttl_s=0)
    handed = _count_fastapi_calls(hot)
    users = [u.as_py() for u in model.user_ids_[:3]]
    bodies = [
        {"user_id": users[0], "k": 5, "ranker_budget_ms": 5000, "total_budget_ms": 10000},
        {"user_id": users[1], "k": 3, "ranker_budget_ms": 1e-6, "total_budget_ms": 10000},
        {
            "history": model.item_ids_[:2].to_pylist(),
            "k": 4,
            "ranker_budget_ms": 5000,
            "total_budget_ms": 10000,
        },
        {"user_id": users[2], "k": 0},  # 422: FastAPI's own
    ]
    for scope in ("service", "read"):
        headers = auth(keys[scope])
        hot.post("/v1/recommend/reranked", json=bodies[0], headers=headers)  # caches the key
        for body in bodies:
            fast = hot.post("/v1/recommend/reranked", json=body, headers=headers)
            slow = cold.post("/v1/recommend/reranked", json=body, headers=headers)
            assert fast.status_code == slow.status_code, (scope, body, fast.text)
            assert fast.headers["content-type"] == slow.headers["content-type"]
            if fast.status_code == 200:
                f, s = fast.json(), slow.json()
                assert (f["items"], f["fallback"]) == (s["items"], s["fallback"])
            else:  # a read key asking about a user, or the 422
                assert fast.json() == slow.json()
    # FastAPI saw the two key-caching requests and the two invalid bodies, nothing else
    assert handed == ["/v1/recommend/reranked"] * 4
    expected, _ = _expected(model, users[0], 5)
    answer = hot.post("/v1/recommend/reranked", json=bodies[0], headers=auth(keys["service"]))
    assert [i["item_id"] for i in answer.json()["items"]] == expected


def test_a_loaded_two_stage_is_warmed_up_before_it_serves(two_stage):
    """The store re-ranks one user at load, so the first request does not pay for the first
    call of each stage."""
    from privrank.serving.store import _load

    _, directory = two_stage
    served = _load("v1", directory)
    assert served.model.stage_seconds()["score.ranker"] > 0
    assert served.model.stage_seconds()["score.retrieval"] > 0
    # the id lookups' dicts are built too
    assert served.model._code_index("user")._codes is not None
    assert served.model._code_index("item")._codes is not None
