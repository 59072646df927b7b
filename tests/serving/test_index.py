"""FAISS retrieval for factor models: exact search equals the model, HNSW reports its recall,
and the API answers through the index."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.models import FitOptions, Query, Recommender, create_model
from privrank.serving.errors import IndexQualityError
from privrank.serving.index import FactorIndex, exact_top_k, is_factor_model, ivf_parameters
from privrank.serving.settings import AUTO_EXACT_THRESHOLD, ServeSettings
from privrank.serving.store import IndexOptions, ModelStore

from ._util import auth, cluster_interactions

pytest.importorskip("faiss")


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
    assert index.report.kind == "hnsw" and index.report.requested == "auto"
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
    headers = auth(keys["service"])
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


# ------------------------------------------------------------------ auto threshold, IVF, floors
def brute_recall(index: FactorIndex, items: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Recall@k of ``index`` against a numpy argsort (an oracle independent of FAISS)."""
    truth = np.argsort(-(queries.astype(np.float64) @ items.T.astype(np.float64)), 1)[:, :k]
    found, _ = index.search(queries, k)
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(3)
    return (
        rng.normal(size=(2000, 16)).astype(np.float32),
        rng.normal(size=(200, 16)).astype(np.float32),
    )


def test_auto_picks_exact_up_to_the_measured_threshold(vectors) -> None:
    assert ServeSettings(model_dir="m").index_exact_threshold == AUTO_EXACT_THRESHOLD == 20_000
    items, queries = vectors
    small = FactorIndex.from_vectors(items, queries, exact_threshold=2000)
    assert small.report.kind == "exact" and small.report.recall == pytest.approx(1.0, abs=1e-3)
    large = FactorIndex.from_vectors(items, queries, exact_threshold=1999)
    assert large.report.kind == "hnsw" and large.report.requested == "auto"
    assert large.report.params["ef_search"] >= 256
    assert large.report.recall == pytest.approx(brute_recall(large, items, queries, 10), abs=2e-3)


def test_ivf_parameters_follow_the_catalogue_size() -> None:
    assert ivf_parameters(100_000) == (1265, 80)  # 4·√n cells, 1/16 of them probed
    assert ivf_parameters(10_000) == (256, 16)  # capped at n / 39
    assert ivf_parameters(30) == (1, 1)


def test_ivf_index_reports_its_recall_against_brute_force(vectors) -> None:
    items, queries = vectors
    index = FactorIndex.from_vectors(items, queries, kind="ivf", recall_floor=0.0)
    nlist, nprobe = ivf_parameters(2000)
    assert index.report.kind == "ivf"
    assert index.report.params == {"nlist": nlist, "nprobe": nprobe, "euclidean_transform": True}
    assert index.report.recall == pytest.approx(brute_recall(index, items, queries, 10), abs=2e-3)
    assert 0.2 < index.report.recall < 1.0  # 4 of 51 cells: approximate, and says so
    codes, scores = index.search(queries[:5], 10)  # the scores are plain inner products
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries[:5] @ items.T, codes, 1), rtol=1e-4, atol=1e-5
    )


def test_an_approximate_index_searches_wider_to_reach_the_floor(vectors) -> None:
    items, queries = vectors
    index = FactorIndex.from_vectors(
        items, queries, kind="ivf", nlist=8, nprobe=1, recall_floor=0.999
    )
    assert index.report.params["nprobe"] == 8  # 1 → 2 → 4 → 8: every cell
    assert index.report.recall >= 0.999 and brute_recall(index, items, queries, 10) >= 0.999


def test_below_the_floor_auto_falls_back_and_explicit_kinds_are_refused(vectors) -> None:
    items, queries = vectors
    graph = {"hnsw_m": 2, "ef_search": 1, "ef_construction": 4, "recall_floor": 1.0}
    with pytest.raises(IndexQualityError, match=r"hnsw recall@10 = .* below the floor 1\.00"):
        FactorIndex.from_vectors(items, queries, kind="hnsw", **graph)
    fallback = FactorIndex.from_vectors(items, queries, kind="auto", exact_threshold=10, **graph)
    assert fallback.report.kind == "exact" and fallback.report.requested == "auto"
    assert "below the floor" in fallback.report.fallback
    assert brute_recall(fallback, items, queries, 10) >= 0.999


def test_a_refused_index_refuses_the_version_and_keeps_the_old_one(
    ials, tmp_path, monkeypatch
) -> None:
    _, directory = ials
    store = ModelStore(tmp_path / "store", index=IndexOptions(kind="hnsw"))
    store.add(directory, "v1", activate=True)
    store.add(directory, "v2")
    assert store.start().index.report.kind == "hnsw"

    def refuse(*args, **kwargs):
        raise IndexQualityError("refusing to serve: hnsw recall@10 = 0.5 is below the floor")

    monkeypatch.setattr(FactorIndex, "build", refuse)
    with pytest.raises(IndexQualityError):
        store.activate("v2")
    assert store.current.version == "v1" and store.pointed_version() == "v1"


def test_api_answers_through_an_ivf_index_and_readyz_reports_it(make_client, ials, keys) -> None:
    model, directory = ials
    client = make_client(model_dir=directory, index="ivf")
    ready = client.get("/readyz").json()
    assert ready["index"]["kind"] == "ivf" and ready["index"]["params"]["nlist"] == 1
    assert ready["index"]["recall"] == 1.0 and ready["neighbours"] is None
    body = client.post(
        "/v1/recommend", json={"user_id": "u3", "k": 5}, headers=auth(keys["service"])
    )
    expected = model.recommend_for_users(["u3"], 5)
    assert [i["item_id"] for i in body.json()["items"]] == list(expected.item_ids[0])


def test_a_model_that_does_not_declare_factors_is_not_indexed(train) -> None:
    """Attributes that look like factors are not a declaration: no probing."""
    model = create_model("most-popular", {}).fit(train)
    rng = np.random.default_rng(0)
    model.user_factors_ = rng.normal(size=(model.n_users_, 4)).astype(np.float32)
    model.item_factors_ = rng.normal(size=(model.n_items_, 4)).astype(np.float32)
    model.fold_in = lambda query: np.zeros((len(query), 4), dtype=np.float32)
    assert not is_factor_model(model)
    assert FactorIndex.build(model, kind="exact") is None


def test_declared_factor_models_are_indexed(ials, bpr) -> None:
    for model in (ials[0], bpr):
        assert is_factor_model(model)
        assert FactorIndex.build(model, kind="exact") is not None
