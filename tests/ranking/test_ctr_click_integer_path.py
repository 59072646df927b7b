"""The served CTR scorer's integer fast path gives the string path's codes and scores."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from privrank.data.features import CTRFrame
from privrank.ranking.ctr import create_ranker
from privrank.ranking.ctr_click import CTRClickScorer


def _frame(n: int, seed: int) -> CTRFrame:
    rng = np.random.default_rng(seed)
    users, ads, hours = rng.integers(0, 40, n), rng.integers(0, 15, n), rng.integers(0, 6, n)
    logit = np.random.default_rng(99).normal(0, 1, (40, 15))[users, ads] - 0.5
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    table = pa.table(
        {
            "label": pa.array(y),
            "user_id": pa.array([str(u) for u in users]),
            "ad_id": pa.array([str(a) for a in ads]),
            "hour": pa.array([str(h) for h in hours]),
        }
    )
    return CTRFrame(table, ("user_id", "ad_id", "hour"), user_field="user_id", name="t")


def test_integer_path_equals_string_path_with_unseen_values() -> None:
    ranker = create_ranker("fm", {"lr": 0.02, "batch_size": 512, "epochs": 4, "embedding_dim": 8})
    ranker.fit(_frame(3000, 0), _frame(1000, 1))
    scorer = CTRClickScorer(ranker)
    rng = np.random.default_rng(3)
    ads = np.concatenate([rng.integers(0, 15, 60), [15, 99, 123456, 15]])  # unseen: hashed
    hours = np.concatenate([rng.integers(0, 6, 60), [7, 0, 1, 8]])
    for _ in range(2):  # the second call answers from the code cache
        fast = scorer.predict_ctr({"ad_id": ads, "hour": hours})
        slow = scorer.predict_ctr({"ad_id": ads.astype(str), "hour": hours.astype(str)})
        np.testing.assert_array_equal(fast, slow)
    assert np.ptp(fast) > 0
    frame = CTRFrame(
        pa.table(
            {
                "label": pa.array(np.zeros(ads.size, dtype=np.int8)),
                "user_id": pa.array([""] * ads.size),
                "ad_id": pa.array([str(a) for a in ads]),
                "hour": pa.array([str(h) for h in hours]),
            }
        ),
        ("user_id", "ad_id", "hour"),
        user_field="user_id",
        name="t",
    )
    np.testing.assert_array_equal(fast, ranker.predict_proba(frame))  # the ranker itself
