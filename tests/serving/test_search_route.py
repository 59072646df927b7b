"""POST /v1/search: the served search model's answers, personalisation, refusals, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.data.item_text import read_item_text_tsv
from privrank.ranking.search import PersonalisedSearch
from privrank.testing import synthetic_interactions, write_group_item_text

from ._util import auth


@pytest.fixture(scope="module")
def search_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVRANK_CACHE_DIR", str(root / "cache"))
        data = synthetic_interactions(n_users=120, n_items=60, per_user=12, seed=0)
        text = read_item_text_tsv(write_group_item_text(root / "items.tsv", n_items=60))
        config = {"candidates": 30, "min_matches": 5, "rounds": 20, "min_data_in_leaf": 5}
        engine = PersonalisedSearch(config).fit(data, text)
        directory = engine.save(root / "model")
    return engine, directory, data


def test_search_answers_as_the_model_does(make_client, model_dir, keys, search_model):
    engine, directory, data = search_model
    client = make_client(model_dir=model_dir, search_dir=directory)
    client.headers.update(auth(keys["read"]))
    indptr, items = data.sequences()
    user_id = data.user_ids.to_pylist()[3]
    history = items[indptr[3] : indptr[4]]
    expected = engine.search(["comedy"], [history], 5)
    expected_ids = [engine.item_ids_[c] for c in expected.items[0]]
    as_user = {"query": "comedy", "user_id": user_id, "k": 5}
    assert client.post("/v1/search", json=as_user).status_code == 403  # a read key: no user ids
    by_user = client.post("/v1/search", json=as_user, headers=auth(keys["service"]))
    assert by_user.status_code == 200, by_user.text
    body = by_user.json()
    assert body["personalised"] is True
    assert [r["item_id"] for r in body["items"]] == expected_ids
    np.testing.assert_allclose([r["score"] for r in body["items"]], expected.scores[0], rtol=1e-5)
    ids = [engine.item_ids_[c] for c in history] + [17, "unknown"]  # unknown ids are dropped
    by_history = client.post("/v1/search", json={"query": "comedy", "history": ids, "k": 5})
    assert [r["item_id"] for r in by_history.json()["items"]] == expected_ids
    anonymous = client.post("/v1/search", json={"query": "comedy", "k": 5}).json()
    assert anonymous["personalised"] is False and len(anonymous["items"]) == 5
    assert set(anonymous["timings_ms"]) == {"embed", "retrieve", "features", "rank"}
    metrics = client.get("/metrics", headers=auth(keys["admin"])).text
    assert 'privrank_search_stage_seconds_count{stage="rank"} 3.0' in metrics


def test_search_refusals(make_client, model_dir, keys, search_model):
    _, directory, data = search_model
    client = make_client(model_dir=model_dir, search_dir=directory)
    body = {"query": "comedy"}
    assert client.post("/v1/search", json=body).status_code == 401
    client.headers.update(auth(keys["read"]))
    service = auth(keys["service"])
    unknown = client.post("/v1/search", json=body | {"user_id": "nobody"}, headers=service)
    assert unknown.status_code == 404
    both = body | {"user_id": data.user_ids.to_pylist()[0], "history": []}
    assert client.post("/v1/search", json=both, headers=service).status_code == 422
    assert client.post("/v1/search", json=body | {"k": 100_000}).status_code == 422
    assert client.post("/v1/search", json={"query": ""}).status_code == 422
    plain = make_client(model_dir=model_dir)
    plain.headers.update(auth(keys["read"]))
    assert plain.post("/v1/search", json=body).status_code == 409
