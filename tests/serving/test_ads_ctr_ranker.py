"""``POST /v1/ads/rank`` served by a trained CTR ranker (DeepFM) instead of the GBDT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tests.serving.test_ads_route import _body

from privrank.data.ad_log_frames import AD_LOG_FIELDS, USER_FIELD
from privrank.data.features import LABEL, CTRFrame
from privrank.models import FitOptions
from privrank.ranking.auction import run_auction
from privrank.ranking.ctr import create_ranker, load_ranker
from privrank.ranking.ctr_click import CTRClickScorer


def _frame(n: int, seed: int) -> CTRFrame:
    rng = np.random.default_rng(seed)
    columns = {name: rng.integers(0, 6, n) for name in AD_LOG_FIELDS}
    columns[USER_FIELD] = rng.integers(0, 200, n)
    p = 1 / (1 + np.exp(-(-2.5 + 0.4 * columns["ad_id"] - 0.3 * columns["position"])))
    table = {LABEL: pa.array((rng.random(n) < p).astype(np.int8))}
    table |= {name: pa.array(columns[name].astype(str)) for name in AD_LOG_FIELDS}
    return CTRFrame(pa.table(table), AD_LOG_FIELDS, user_field=USER_FIELD)


@pytest.fixture(scope="module")
def deepfm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ranker = create_ranker(
        "deepfm", {"embedding_dim": 4, "hidden": (16,), "epochs": 3, "batch_size": 512}
    )
    ranker.fit(_frame(6000, 0), _frame(2000, 1), FitOptions(seed=0))
    return ranker.save(tmp_path_factory.mktemp("ads") / "deepfm")


def test_a_ctr_ranker_serves_calibrated_pctr(make_client, model_dir, deepfm_dir, keys) -> None:
    client = make_client(model_dir=model_dir, ads_model=deepfm_dir)
    body = _body(slots=3, reserve=0.5, rule="second")
    answer = client.post("/v1/ads/rank", json=body, headers={"X-API-Key": keys["read"]})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    # The oracle: the ranker's own calibrated predict_proba on the same rows, user unknown.
    ranker = load_ranker(deepfm_dir)
    n = len(body["candidates"])
    table = {LABEL: pa.array(np.zeros(n, dtype=np.int8)), USER_FIELD: pa.array([""] * n)}
    for name in ("user_segment", "context_id", "device", "hour"):
        table[name] = pa.array([str(body["context"][name])] * n)
    for name in ("ad_id", "ad_category", "campaign_id", "advertiser_id"):
        table[name] = pa.array([str(c[name]) for c in body["candidates"]])
    table["position"] = pa.array(["0"] * n)
    rows = CTRFrame(pa.table(table), AD_LOG_FIELDS, user_field=USER_FIELD)
    pctr = ranker.predict_proba(rows)
    assert not np.allclose(pctr, ranker.predict_raw(rows))  # the calibrated output is served
    bids = np.array([c["bid"] for c in body["candidates"]])
    expected = run_auction(bids, pctr, reserve=0.5, slots=3, rule="second")
    assert [w["ad_id"] for w in got["winners"]] == [
        body["candidates"][i]["ad_id"] for i in expected.winners
    ]
    assert np.allclose([w["pctr"] for w in got["winners"]], pctr[expected.winners])
    assert np.allclose([w["price"] for w in got["winners"]], expected.prices)


def test_scorer_does_not_ask_for_the_user(deepfm_dir) -> None:
    scorer = CTRClickScorer.load(deepfm_dir)
    assert USER_FIELD not in scorer.feature_names
    assert set(scorer.feature_names) == set(AD_LOG_FIELDS) - {USER_FIELD}
