"""Sparse top-k neighbour matrices for item-item models: pruning against a brute-force oracle,
exact answers for ItemKNN, reported recall for pruned EASE, refusal below the floor, and the API
answering through the matrix."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from privrank.data.synthetic import SyntheticConfig, generate
from privrank.models import FitOptions, Query, create_model
from privrank.serving.errors import IndexQualityError
from privrank.serving.neighbours import NeighbourIndex, item_item_matrix, prune_rows

from ._util import CLUSTER_A, auth


def brute_prune(dense: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k largest non-zero entries (ties: lower column), by sorting."""
    out = np.zeros_like(dense)
    for i, row in enumerate(dense):
        columns = [j for j in np.lexsort((np.arange(row.size), -row)) if row[j] != 0][:k]
        out[i, columns] = row[columns]
    return out


def brute_top(scores: np.ndarray, removed: set[int], k: int) -> list[int]:
    """Top-k codes of a dense score vector, ties by lower code, ``removed`` left out."""
    order = np.lexsort((np.arange(scores.size), -scores))
    return [int(c) for c in order if int(c) not in removed][:k]


@pytest.fixture(scope="module")
def data():
    return generate(SyntheticConfig(n_users=300, n_items=120, n_interactions=3000, seed=0))


@pytest.fixture(scope="module")
def itemknn(data):
    return create_model("itemknn", {"neighbors": 20}).fit(data, FitOptions(seed=0))


@pytest.fixture(scope="module")
def ease(data):
    return create_model("ease", {"regularization": 50.0}).fit(data, FitOptions(seed=0))


def test_pruning_keeps_the_k_largest_per_row() -> None:
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(30, 40)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.5] = 0
    dense[3, :6] = 1.0  # ties: lower columns win
    for k in (1, 3, 7, 40):
        expected = brute_prune(dense, k)
        np.testing.assert_array_equal(prune_rows(dense, k).toarray(), expected)
        np.testing.assert_array_equal(prune_rows(sp.csr_matrix(dense), k).toarray(), expected)
    assert prune_rows(dense, None).nnz == np.count_nonzero(dense)


def test_itemknn_answers_equal_the_model_score_for_score(itemknn) -> None:
    index = NeighbourIndex.build(itemknn)
    report = index.report
    assert report.exact and report.k is None and report.source == "similarity_"
    assert report.recall == 1.0 and report.max_score_error == 0.0
    assert report.nnz == itemknn.similarity_.nnz
    indptr, items = itemknn.history_indptr_, itemknn.history_items_
    for user in range(0, itemknn.n_users_, 7):
        seen = items[indptr[user] : indptr[user + 1]]
        k = itemknn.n_items_ - np.unique(seen).size  # every item: zero scores filled in too
        codes, scores = index.top(seen, k, set(seen.tolist()))
        expected_codes, expected_scores = itemknn.recommend(Query.users([user]), k)
        np.testing.assert_array_equal(codes, expected_codes[0])
        np.testing.assert_array_equal(scores, expected_scores[0])


def test_pruned_itemknn_and_ease_report_the_recall_of_their_answers(itemknn, ease) -> None:
    for model, k in ((itemknn, 3), (ease, 8)):
        index = NeighbourIndex.build(model, k, recall_floor=0.0)
        report = index.report
        assert not report.exact and report.k == k
        assert np.diff(index.matrix.indptr).max() <= k
        # Oracle: dense x · prune(W) ranked by numpy, against the model's own top-10.
        dense_w = (
            model.similarity_.toarray()
            if sp.issparse(getattr(model, "similarity_", None))
            else model.weights_
        )
        pruned = brute_prune(np.asarray(dense_w), k)
        rng = np.random.default_rng(0)
        lengths = np.diff(model.history_indptr_)
        eligible = np.flatnonzero((lengths > 0) & (lengths <= model.n_items_ - 10))
        users = np.sort(rng.choice(eligible, size=200, replace=False))
        expected, _ = model.recommend(Query.users(users), 10)
        hits, indptr = 0, model.history_indptr_
        for row, user in enumerate(users):
            seen = model.history_items_[indptr[user] : indptr[user + 1]]
            x = np.zeros(model.n_items_, dtype=np.float32)
            x[seen] = 1
            top = brute_top((x @ pruned).astype(np.float32), set(seen.tolist()), 10)
            assert top == index.top(seen, 10, set(seen.tolist()))[0].tolist()
            hits += len(set(top) & set(expected[row].tolist()))
        assert report.recall == pytest.approx(hits / (10 * users.size))
        assert report.recall < 1.0 and report.max_score_error > 0


def test_ease_with_every_weight_matches_the_dense_model(ease) -> None:
    index = NeighbourIndex.build(ease, ease.n_items_)
    assert index.report.exact and index.report.recall == 1.0
    assert index.report.max_score_error < 1e-5


def test_a_pruned_matrix_below_the_floor_is_refused(ease) -> None:
    with pytest.raises(IndexQualityError, match="raise --neighbours"):
        NeighbourIndex.build(ease, 1, recall_floor=0.99)


def test_factor_and_popularity_models_get_no_neighbour_matrix(data) -> None:
    ials = create_model("ials", {"factors": 4, "epochs": 1}).fit(data, FitOptions(seed=0))
    popular = create_model("most-popular", {}).fit(data)
    assert NeighbourIndex.build(ials) is None and NeighbourIndex.build(popular) is None


def test_api_answers_itemknn_through_the_neighbour_matrix(
    make_client, train, tmp_path, keys
) -> None:
    model = create_model("itemknn", {"neighbors": 5}).fit(train)
    model.save(tmp_path / "knn")
    client = make_client(model_dir=tmp_path / "knn")
    served = client.app.state.serving.store.current
    assert served.neighbours is not None and served.index is None
    ready = client.get("/readyz").json()
    assert ready["neighbours"]["exact"] and ready["neighbours"]["recall"] == 1.0
    headers = auth(keys["service"])
    for user in ("u0", "u12"):
        got = client.post("/v1/recommend", json={"user_id": user, "k": 12}, headers=headers)
        expected = model.recommend_for_users([user], 12)
        assert [i["item_id"] for i in got.json()["items"]] == list(expected.item_ids[0])
        np.testing.assert_array_equal([i["score"] for i in got.json()["items"]], expected.scores[0])
    similar = client.get(f"/v1/items/{CLUSTER_A[0]}/similar?k=6", headers=headers).json()
    expected = model.recommend_for_histories([[CLUSTER_A[0]]], 6)
    assert [i["item_id"] for i in similar["items"]] == list(expected.item_ids[0])
    excluded = client.post(
        "/v1/recommend/history",
        json={"history": CLUSTER_A[:2], "k": 5, "exclude": [expected.item_ids[0][1]]},
        headers=headers,
    ).json()
    assert expected.item_ids[0][1] not in [i["item_id"] for i in excluded["items"]]
    dense = make_client(model_dir=tmp_path / "knn", index="off")
    assert dense.app.state.serving.store.current.neighbours is None
    pruned = make_client(model_dir=tmp_path / "knn", neighbours=2, index_recall_floor=0.0)
    assert pruned.get("/readyz").json()["neighbours"]["k"] == 2


def test_a_model_that_does_not_declare_an_item_item_matrix_gets_none(data) -> None:
    """A square matrix under a familiar attribute name is not a declaration: no probing."""
    model = create_model("most-popular", {}).fit(data)
    model.similarity_ = sp.identity(model.n_items_, dtype=np.float32, format="csr")
    model.weights_ = np.eye(model.n_items_, dtype=np.float32)
    assert item_item_matrix(model) is None
    assert NeighbourIndex.build(model) is None


def test_declared_item_item_models_give_their_matrix(itemknn, ease) -> None:
    assert item_item_matrix(itemknn) is itemknn.similarity_
    assert item_item_matrix(ease) is ease.weights_
