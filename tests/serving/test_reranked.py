"""``POST /v1/recommend/reranked``: the served two-stage model's order, stage metrics, the
ranker's latency budget (fallback to retrieval order, counted) and refusals."""

from __future__ import annotations

import numpy as np
import pytest

import privrank.ranking  # noqa: F401  (registers two-stage)
from privrank.models import FitOptions, Query, create_model

from ._util import auth, cluster_interactions

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


def test_refuses_a_model_that_is_not_two_stage(client, keys):
    answer = client.post(
        "/v1/recommend/reranked", json={"user_id": "u1", "k": 3}, headers=auth(keys["service"])
    )
    assert answer.status_code == 409
