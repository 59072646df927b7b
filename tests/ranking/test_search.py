"""Catalogue search: BM25 and fusion against hand computations, the query builder, the ranker
call, and the personalised engine end to end (fit, search, save/load) on small data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrank.data.item_text import ItemText
from privrank.errors import ArtifactError
from privrank.ranking.search import (
    CatalogueIndex,
    PersonalisedSearch,
    build_queries,
    fit_lambdarank,
)
from privrank.ranking.search._catalogue import RRF_K, dense_ranks
from privrank.testing import synthetic_interactions, write_group_item_text

CORPUS = ["red apple pie", "green apple", "red red car", "blue sky"]


def _bm25_by_hand(query: list[str], corpus: list[list[str]], k1=1.5, b=0.75) -> np.ndarray:
    """Lucene BM25 (the variant bm25s implements: no (k1 + 1) factor), written out."""
    n = len(corpus)
    avgdl = sum(len(d) for d in corpus) / n
    out = np.zeros(n)
    for term in query:
        df = sum(term in d for d in corpus)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, doc in enumerate(corpus):
            tf = doc.count(term)
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return out


def test_bm25_and_fusion_match_hand_computations():
    embeddings = np.eye(4, 8, dtype=np.float32)
    index = CatalogueIndex(CORPUS, embeddings)
    expected = _bm25_by_hand(["red", "apple"], [d.split() for d in CORPUS])
    np.testing.assert_allclose(index.bm25(["red apple"])[0], expected, rtol=1e-5)
    query_vector = np.zeros((1, 8), dtype=np.float32)
    query_vector[0, 3] = 1.0  # semantically "blue sky"
    scores = index.scores(["red apple"], query_vector)
    np.testing.assert_allclose(scores.cosine[0], [0, 0, 0, 1])
    bm25_rank = np.argsort(np.argsort(-expected, kind="stable"), kind="stable") + 1
    cosine_rank = np.array([2, 3, 4, 1])  # ties broken by the lower item code
    rrf = 1 / (RRF_K + cosine_rank) + np.where(expected > 0, 1 / (RRF_K + bm25_rank), 0)
    np.testing.assert_allclose(scores.rrf[0], rrf, rtol=1e-6)
    assert dense_ranks(np.array([[1.0, 3.0, 3.0]])).tolist() == [[3, 1, 2]]


def test_queries_are_genre_sets_of_heldout_items_matched_widely_enough():
    text = ItemText(
        item_ids=np.arange(6),
        titles=tuple(f"t{i}" for i in range(6)),
        genres=(("A",), ("A", "B"), ("A", "B"), ("B",), ("C",), ("A",)),
        source="test",
    )
    rows = np.arange(6)
    # user 0 held out items 1 and 5; user 1 held out item 4 (genre C: 1 match < 2); user 2 none
    indptr = np.array([0, 2, 3, 3])
    items = np.array([1, 5, 4])
    queries, counts = build_queries(text, rows, indptr, items, seed=0, min_matches=2)
    assert counts == {"users_with_heldout": 2, "users_without_query": 1, "queries": 1}
    (query,) = queries
    assert query.user == 0 and query.seed_item in (1, 5)
    if query.seed_item == 1:  # {A, B}: items 1 and 2 match; relevant = held-out ones = {1}
        assert query.text == "a b" and query.relevant.tolist() == [1]
    else:  # {A}: relevant = held-out items with A = {1, 5}
        assert query.text == "a" and query.relevant.tolist() == [1, 5]


def test_the_ranker_learns_an_ordering_a_feature_gives():
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.2).astype(np.float32)
    features = np.column_stack([labels + 0.1 * rng.random(400), rng.random(400)])
    booster = fit_lambdarank(
        features, labels, np.full(20, 20), params={"min_data_in_leaf": 5}, rounds=20, seed=0
    )
    scores = booster.predict(features).reshape(20, 20)
    for group, label in zip(scores, labels.reshape(20, 20), strict=True):
        if label.any() and not label.all():
            assert scores is not None and group[label == 1].min() > group[label == 0].max()


def test_the_ranker_is_lambdamarts_fit_and_matches_lightgbm_with_searchs_old_settings():
    """Search trains through ranking/ltr's LambdaMART; the oracle is LightGBM called directly
    with the settings search used before (its own seed, row-wise histograms, one thread)."""
    import lightgbm

    rng = np.random.default_rng(3)
    labels = (rng.random(1500) < 0.15).astype(np.float32)
    features = np.column_stack([labels + 0.5 * rng.random(1500), rng.random((1500, 2))])
    features = features.astype(np.float32)
    params = {"num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 5}
    booster = fit_lambdarank(features, labels, np.full(60, 25), params=params, rounds=30, seed=2)
    settings = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": [10],
        "seed": 2,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbosity": -1,
    } | params
    oracle = lightgbm.train(
        settings, lightgbm.Dataset(features, label=labels, group=np.full(60, 25)), 30
    )
    np.testing.assert_array_equal(booster.predict(features), oracle.predict(features))


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVRANK_CACHE_DIR", str(tmp_path / "cache"))
    data = synthetic_interactions(n_users=120, n_items=60, per_user=12, seed=0)
    from privrank.data.item_text import read_item_text_tsv

    text = read_item_text_tsv(write_group_item_text(tmp_path / "items.tsv", n_items=60))
    return data, text


def test_personalised_search_end_to_end(small, tmp_path):
    data, text = small
    config = {"candidates": 30, "min_matches": 5, "rounds": 20, "min_data_in_leaf": 5}
    engine = PersonalisedSearch(config).fit(data, text)
    assert engine.training_["groups"] >= 10
    indptr, items = data.sequences()
    history = items[indptr[0] : indptr[1]]
    result = engine.search(["comedy"], [history], 5)
    assert result.items.shape == (1, 5) and not np.isin(result.items, history).any()
    assert set(result.timings) == {"embed", "retrieve", "features", "rank"}
    plain = engine.search(["comedy"], [history], 5, rerank=False)
    assert set(plain.timings) == {"embed", "retrieve"}
    # Without re-ranking the order is the fusion order over the items not in the history.
    fused = engine.index_.scores(["comedy"], engine.embeddings_[plain.items[0, :1]]).rrf[0]
    assert np.all(np.diff(fused[plain.items[0]]) <= 0)
    loaded = PersonalisedSearch.load(engine.save(tmp_path / "model"))
    again = loaded.search(["comedy"], [history], 5)
    np.testing.assert_array_equal(again.items, result.items)
    np.testing.assert_allclose(again.scores, result.scores, rtol=1e-6)
    (tmp_path / "model" / "ranker.txt").write_text("tampered")
    with pytest.raises(ArtifactError, match="SHA-256 differs"):
        PersonalisedSearch.load(tmp_path / "model")
