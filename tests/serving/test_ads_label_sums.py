"""``POST /v1/ads/rank`` served by the label-sums logistic click model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.serving.test_ads_route import _body

from privrank.errors import ArtifactError
from privrank.ranking.auction import run_auction
from privrank.ranking.label_sums_logistic import LabelSumsConfig, LabelSumsLogistic

FIELDS = ("user_segment", "ad_id", "ad_category", "hour", "position")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[LabelSumsLogistic, Path]:
    rng = np.random.default_rng(0)
    n = 8000
    columns = {name: rng.integers(0, 6, n) for name in FIELDS}
    p = 1 / (1 + np.exp(-(-2.0 + 0.4 * columns["ad_id"] - 0.3 * columns["position"])))
    labels = (rng.random(n) < p).astype(float)
    config = LabelSumsConfig(crosses=(("user_segment", "ad_id"),), min_count=5, l2=1.0)
    model = LabelSumsLogistic(FIELDS, config).fit(columns, labels, 2.0, rng)
    return model, model.save(tmp_path_factory.mktemp("ads") / "sums", {"note": "test"})


@pytest.fixture(scope="module")
def sums_dir(fitted: tuple[LabelSumsLogistic, Path]) -> Path:
    return fitted[1]


def test_label_sums_model_serves_its_own_pctr(make_client, model_dir, sums_dir, keys) -> None:
    client = make_client(model_dir=model_dir, ads_model=sums_dir)
    body = _body(slots=2, reserve=0.1, rule="second")
    answer = client.post("/v1/ads/rank", json=body, headers={"X-API-Key": keys["read"]})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    model = LabelSumsLogistic.load(sums_dir)
    n = len(body["candidates"])
    features = {
        "user_segment": np.full(n, body["context"]["user_segment"]),
        "hour": np.full(n, body["context"]["hour"]),
        "position": np.zeros(n, dtype=int),
        "ad_id": np.array([c["ad_id"] for c in body["candidates"]]),
        "ad_category": np.array([c["ad_category"] for c in body["candidates"]]),
    }
    pctr = model.predict_ctr(features)
    bids = np.array([c["bid"] for c in body["candidates"]])
    expected = run_auction(bids, pctr, reserve=0.1, slots=2, rule="second")
    assert [w["ad_id"] for w in got["winners"]] == [
        body["candidates"][i]["ad_id"] for i in expected.winners
    ]
    assert np.allclose([w["pctr"] for w in got["winners"]], pctr[expected.winners])
    assert np.allclose([w["price"] for w in got["winners"]], expected.prices)
    assert got["model"] == LabelSumsLogistic.metadata(sums_dir)["sha256"][:16]


def test_saved_model_round_trips_and_refuses_altered_weights(fitted, tmp_path) -> None:
    import shutil

    fit, sums_dir = fitted
    model = LabelSumsLogistic.load(sums_dir)
    meta = LabelSumsLogistic.metadata(sums_dir)
    assert meta["note"] == "test" and meta["guarantee"]["epsilon"] == 2.0
    assert model.guarantee_ is not None and model.guarantee_.l1_sensitivity == len(FIELDS) + 1
    rng = np.random.default_rng(1)
    rows = {name: rng.integers(0, 8, 500) for name in FIELDS}  # 6, 7: unseen values
    assert np.array_equal(model.predict_ctr(rows), fit.predict_ctr(rows))
    assert model.predict_ctr(rows).std() > 0
    altered = tmp_path / "altered"
    shutil.copytree(sums_dir, altered)
    blob = bytearray((altered / "weights.safetensors").read_bytes())
    blob[-1] ^= 1
    (altered / "weights.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="checksum"):
        LabelSumsLogistic.load(altered)
