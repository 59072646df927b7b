"""A federated model (fedmf) is served like any factor model: a known user and a history sent
by a device are both folded in against the item factors."""

from __future__ import annotations

import pytest

from privrank.models import FitOptions, Recommender, create_model

from ._util import CLUSTER_B, auth, cluster_interactions


@pytest.fixture(scope="module")
def fedmf_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fedmf") / "model"
    model = create_model("fedmf", {"factors": 8, "epochs": 6}).fit(
        cluster_interactions(), FitOptions(seed=0)
    )
    model.save(directory)
    return directory


def test_fedmf_is_served_for_users_and_sent_histories(make_client, keys, fedmf_dir) -> None:
    client = make_client(model_dir=fedmf_dir)
    model = Recommender.load(fedmf_dir)
    response = client.post(
        "/v1/recommend", json={"user_id": "u3", "k": 3}, headers=auth(keys["service"])
    )
    assert response.status_code == 200, response.text
    expected = model.recommend_for_users(["u3"], 3)
    assert [i["item_id"] for i in response.json()["items"]] == expected.item_ids[0]
    history = CLUSTER_B[:3]
    response = client.post(
        "/v1/recommend/history", json={"history": history, "k": 3}, headers=auth(keys["read"])
    )
    assert response.status_code == 200, response.text
    expected = model.recommend_for_histories([history], 3)
    assert [i["item_id"] for i in response.json()["items"]] == expected.item_ids[0]
