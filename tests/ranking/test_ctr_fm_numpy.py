"""The FM ranker's numpy forward pass against the torch network (the oracle)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from privrank.data.features import CTRFrame, FeatureTable
from privrank.ranking.ctr import create_ranker
from privrank.ranking.ctr.networks import FM
from privrank.ranking.ctr.neural import fm_forward_numpy, predict_network


@pytest.mark.parametrize("n_numeric", [0, 3])
def test_numpy_fm_forward_matches_torch(n_numeric: int) -> None:
    torch.manual_seed(0)
    network = FM(n_codes=40, n_fields=5, n_numeric=n_numeric, dim=16)
    with torch.no_grad():  # non-trivial weights everywhere (the linear table starts at 0)
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.3)
    network.eval()
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 40, (257, 5)).astype(np.int64)
    numeric = rng.normal(size=(257, n_numeric)).astype(np.float32)
    with torch.no_grad():
        logits = network(torch.from_numpy(codes), torch.from_numpy(numeric)).double().numpy()
    expected = 1.0 / (1.0 + np.exp(-logits))
    got = fm_forward_numpy(network, codes, numeric)
    assert got.dtype == np.float64 and got.shape == (257,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    assert np.ptp(expected) > 0.5  # the check is not on a flat output


def _frame(n: int, seed: int) -> CTRFrame:
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 30, n), rng.integers(0, 12, n)
    logit = np.random.default_rng(99).normal(0, 1, (30, 12))[users, items] - 0.5
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    table = pa.table(
        {
            "label": pa.array(y),
            "user": pa.array([f"u{u}" for u in users]),
            "item": pa.array([f"i{i}" for i in items]),
        }
    )
    return CTRFrame(table, ("user", "item"), name="synthetic")


def test_fm_ranker_predicts_with_numpy_like_torch() -> None:
    ranker = create_ranker("fm", {"lr": 0.02, "batch_size": 512, "epochs": 6, "embedding_dim": 8})
    ranker.fit(_frame(3000, 0), _frame(1000, 1))
    test = _frame(1500, 2)
    rows = ranker.encode(test)
    assert isinstance(rows, FeatureTable)
    assert len(ranker.members_) == 5  # the default rule: a seed ensemble of five FMs
    logits = np.mean([predict_network(m, rows, 512, True) for m in ranker.members_], axis=0)
    torch_oracle = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(ranker.predict_raw(test), torch_oracle, rtol=0, atol=2e-6)
