"""FAISS retrieval for factor models: exact search equals the model, HNSW reports its recall,
and the API answers through the index."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.models import FitOptions, Query, Recommender, create_model
from privrank.serving.index import FactorIndex, exact_top_k, is_factor_model

from ._util import auth, cluster_interactions

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def ials(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ials") / "model"
    model = create_model("ials", {"factors": 8, "epochs": 4}).fit(
        cluster_interactions(), FitOptions(seed=0)
    )
    model.save(directory)
    return model, directory


@pytest.fixture(scope="module")
def bpr():
    pytest.importorskip("privrank.models.bpr")  # registers "bpr"
    return create_model("bpr", {"factors": 8, "epochs": 2, "patience": 0}).fit(
        cluster_interactions(), FitOptions(seed=0)
    )


def test_exact_index_reproduces_the_model(ials) -> None:
    model, _ = ials
    index = FactorIndex.build(model)
    assert index is not None and index.report.kind == "exact" and index.report.recall == 1.0
    query = Query.users(np.arange(model.n_users_))
    codes, scores = index.search(index.query_vectors(model, query), 5)
    expected = model.score(query)
    np.testing.assert_allclose(scores, np.take_along_axis(expected, codes, 1), rtol=1e-4)
    np.testing.assert_allclose(np.sort(scores, 1), np.sort(expected, 1)[:, -5:], rtol=1e-5)


def test_item_bias_is_folded_into_the_vectors(bpr) -> None:
    index = FactorIndex.build(bpr)
    assert index is not None and index.has_bias and index.report.dim == 9
    query = Query.users(np.arange(bpr.n_users_))
    codes, scores = index.search(index.query_vectors(bpr, query), 3)
    np.testing.assert_allclose(
        scores, np.take_along_axis(bpr.score(query), codes, 1), rtol=1e-4, atol=1e-5
    )


def test_hnsw_above_the_threshold_reports_recall(ials) -> None:
    model, _ = ials
    index = FactorIndex.build(model, exact_threshold=10, recall_k=5)
    assert index.report.kind == "hnsw"
    assert index.report.recall_k == 5 and index.report.recall_queries == model.n_users_
    assert 0.9 <= index.report.recall <= 1.0  # a 30-item graph is searched almost exhaustively


def test_models_without_factors_get_no_index(model_dir) -> None:
    ease = Recommender.load(model_dir)
    assert not is_factor_model(ease)
    assert FactorIndex.build(ease) is None


def test_recall_check_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    items = rng.normal(size=(50, 4)).astype(np.float32)
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    best = exact_top_k(queries, items, 5)
    np.testing.assert_array_equal(best, np.argsort(-(queries @ items.T), 1)[:, :5])


def test_api_answers_through_the_index(make_client, ials, keys) -> None:
    model, directory = ials
    client = make_client(model_dir=directory)
    served = client.app.state.serving.store.current
    assert served.index is not None
    listing = client.get("/v1/models", headers=auth(keys["read"])).json()
    assert listing["active"]["index"]["kind"] == "exact"
    headers = auth(keys["read"])
    for user in ("u0", "u15"):
        body = client.post("/v1/recommend", json={"user_id": user, "k": 5}, headers=headers)
        expected = model.recommend_for_users([user], 5)
        got = body.json()["items"]
        np.testing.assert_allclose([i["score"] for i in got], expected.scores[0], rtol=1e-4)
        assert {i["item_id"] for i in got} == set(expected.item_ids[0])
    history = client.post(
        "/v1/recommend/history", json={"history": [100, 101], "k": 4}, headers=headers
    ).json()
    expected = model.recommend_for_histories([[100, 101]], 4)
    assert {i["item_id"] for i in history["items"]} == set(expected.item_ids[0])
    excluded = client.post(
        "/v1/recommend",
        json={"user_id": "u0", "k": 30, "exclude": [expected.item_ids[0][0]]},
        headers=headers,
    ).json()
    assert expected.item_ids[0][0] not in [i["item_id"] for i in excluded["items"]]
    assert len(excluded["items"]) == 30 - 8 - 1  # unseen items minus the excluded one
    off = make_client(model_dir=directory, index="off")
    assert off.app.state.serving.store.current.index is None
