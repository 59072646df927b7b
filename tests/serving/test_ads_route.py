"""``POST /v1/ads/rank``: authenticated, ranked by eCPM with the served click model, logged
without user data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from privrank.data.synthetic_ads import FEATURE_COLUMNS
from privrank.ranking.auction import run_auction
from privrank.ranking.gbdt_click import GBDTClickConfig, GBDTClickModel
from privrank.workflow.label_dp_training import CATEGORICAL_COLUMNS

FEATURES = FEATURE_COLUMNS


@pytest.fixture(scope="module")
def ads_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n = 20_000
    columns = {name: rng.integers(0, 6, n) for name in FEATURES}
    p = 1 / (1 + np.exp(-(-3 + 0.3 * columns["ad_id"] - 0.4 * columns["position"])))
    model = GBDTClickModel(FEATURES, CATEGORICAL_COLUMNS, GBDTClickConfig(n_estimators=10))
    model.fit(columns, (rng.random(n) < p).astype(int))
    return model.save(tmp_path_factory.mktemp("ads") / "click")


def _body(n: int = 20, **extra: object) -> dict:
    rng = np.random.default_rng(n)
    return {
        "context": {"user_segment": 2, "context_id": 3, "device": 1, "hour": 4},
        "candidates": [
            {
                "ad_id": int(i % 6),
                "ad_category": 1,
                "campaign_id": 2,
                "advertiser_id": 0,
                "bid": round(float(rng.uniform(0.1, 3.0)), 3),
            }
            for i in range(n)
        ],
        **extra,
    }


def test_ranks_by_ecpm_with_the_served_model(make_client, model_dir, ads_model, keys) -> None:
    client = make_client(model_dir=model_dir, ads_model=ads_model)
    body = _body(slots=3, reserve=1.0, rule="second")
    answer = client.post("/v1/ads/rank", json=body, headers={"X-API-Key": keys["read"]})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    # The same auction by hand from the model's own pCTRs.
    model = GBDTClickModel.load(ads_model)
    n = len(body["candidates"])
    features = {name: np.full(n, body["context"].get(name, 0)) for name in FEATURES}
    for name in ("ad_id", "ad_category", "campaign_id", "advertiser_id"):
        features[name] = np.array([c[name] for c in body["candidates"]])
    features["position"] = np.zeros(n, dtype=int)
    pctr = model.predict_ctr(features)
    bids = np.array([c["bid"] for c in body["candidates"]])
    expected = run_auction(bids, pctr, reserve=1.0, slots=3, rule="second")
    assert [w["ad_id"] for w in got["winners"]] == [
        body["candidates"][i]["ad_id"] for i in expected.winners
    ]
    assert np.allclose([w["price"] for w in got["winners"]], expected.prices)
    assert np.allclose([w["pctr"] for w in got["winners"]], pctr[expected.winners])
    assert got["eligible"] == expected.eligible


def test_needs_a_key_and_validates(make_client, model_dir, ads_model, keys) -> None:
    client = make_client(model_dir=model_dir, ads_model=ads_model)
    assert client.post("/v1/ads/rank", json=_body()).status_code == 401
    headers = {"X-API-Key": keys["read"]}
    bad = _body()
    bad["context"]["user_id"] = "u1"  # no user ids: unknown fields are refused
    assert client.post("/v1/ads/rank", json=bad, headers=headers).status_code == 422
    assert client.post("/v1/ads/rank", json=_body(rule="third"), headers=headers).status_code == 422
    none = make_client(model_dir=model_dir)  # no ads model served
    assert none.post("/v1/ads/rank", json=_body(), headers=headers).status_code == 409


def test_every_decision_is_logged_without_user_data(
    make_client, model_dir, ads_model, keys, caplog
) -> None:
    client = make_client(model_dir=model_dir, ads_model=ads_model)
    with caplog.at_level(logging.INFO, logger="privrank.serving.ads.decisions"):
        answer = client.post(
            "/v1/ads/rank", json=_body(slots=2), headers={"X-API-Key": keys["read"]}
        )
    assert answer.status_code == 200
    records = [r for r in caplog.records if r.name == "privrank.serving.ads.decisions"]
    assert len(records) == 1
    logged = json.loads(records[0].getMessage())
    assert logged["decision_id"] == answer.json()["decision_id"]
    assert [w["ad_id"] for w in logged["winners"]] == [w["ad_id"] for w in answer.json()["winners"]]
    text = records[0].getMessage()
    for field in ("user_segment", "context_id", "device", "hour", "user"):
        assert field not in text
