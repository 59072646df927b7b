"""User-level DP-SGD for the neural CTR rankers: the non-private limit, the noise, the ε."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest
import torch
from tests.ranking.test_ctr_rankers import synthetic

from privrank.data.features import FeatureEncoder
from privrank.errors import ConfigError
from privrank.models import FitOptions
from privrank.privacy.dpsgd import DPSGDTrainer, VmapClipping, torch_noise_generator
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.ranking.ctr import create_ranker, load_ranker
from privrank.ranking.ctr.networks import FM, DeepFM
from privrank.ranking.ctr.private import (
    CTRPrivateConfig,
    _batch,
    group_user_rows,
    plan_private_fit,
    private_tables,
    train_network_private,
    user_loss_fn,
)


@pytest.fixture(scope="module")
def tables():
    train, _ = synthetic(3000, 0)
    valid, _ = synthetic(1000, 1)
    return private_tables(train, valid, FeatureEncoder())


def _network(table, cls=FM, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    v = table.vocabulary
    return cls(v.n_codes, len(v.fields), len(v.numeric), 4, **kwargs)


def test_group_user_rows_keeps_each_users_first_rows() -> None:
    users = np.array([2, 0, 2, 2, 1, 0, 2])
    groups = group_user_rows(users, 2)
    assert groups.users.tolist() == [0, 1, 2]
    assert groups.index.tolist() == [[1, 5], [4, -1], [0, 2]]
    assert (groups.kept, groups.dropped) == (5, 2)


def test_zero_noise_and_no_clipping_equals_full_batch_training(tables) -> None:
    """q = 1, C huge, noise scale 0: each step is Adam on Σ_rows BCE / n_users (the oracle)."""
    train, valid = tables
    private = _network(train)
    reference = copy.deepcopy(private)
    settings = CTRPrivateConfig(expected_batch_users=10_000, epochs=3, lr=0.01)
    spec = PrivacySpec(
        epsilon=1.0, delta=1e-3, max_interactions_per_user=20, clipping_norm=1e9, noise_seed=1
    )
    with _noise_scale_for_testing(0.0):
        guarantee, facts = train_network_private(
            private, train, valid, settings, 0.0, spec, lambda *a, **k: None,
            lambda rows: np.full(len(rows), 0.5),
        )  # fmt: skip
    assert facts["steps"] == 3 and facts["sampling_rate"] == 1.0
    assert guarantee.noise_scale_for_testing == 0.0
    groups = group_user_rows(train.user_codes, 20)
    rows = groups.index[groups.index >= 0]
    codes, numeric = torch.from_numpy(train.codes[rows]), torch.from_numpy(train.numeric[rows])
    labels = torch.from_numpy(train.labels[rows])
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.01, weight_decay=0.0)
    reference.train()
    for _ in range(3):
        optimizer.zero_grad()
        logits = reference(codes, numeric)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        (loss / groups.n_users).backward()
        optimizer.step()
    for (name, a), b in zip(
        private.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=2e-5), name


def test_noise_on_the_summed_gradient_has_std_m_times_c(tables) -> None:
    train, _ = tables
    network = _network(train, DeepFM, hidden=(256,), dropout=0.0, batch_norm=False)
    groups = group_user_rows(train.user_codes, 20)
    data, gathered = _batch(train, groups, np.arange(groups.n_users))
    named = dict(network.named_parameters())
    m, c, b = 1.7, 0.5, 25.0
    grads = []
    for scale in (0.0, 1.0):
        engine = VmapClipping(named, user_loss_fn(network), c)
        with _noise_scale_for_testing(scale):
            trainer = DPSGDTrainer(
                engine, None, noise_multiplier=m, expected_batch_size=b,
                noise=torch_noise_generator(np.random.default_rng(5)),
            )  # fmt: skip
        trainer.privatise((), data, gathered)
        grads.append(torch.cat([p.grad.flatten() for p in named.values()]))
    noise = (grads[1] - grads[0]) * b
    assert noise.numel() > 1000
    assert abs(float(noise.mean())) < 4 * m * c / math.sqrt(noise.numel())
    assert float(noise.std()) == pytest.approx(m * c, rel=0.1)  # ±5 standard errors
    clipped = grads[0] * b  # the clipped sum alone: at most C per user
    assert float(clipped.norm()) <= c * groups.n_users + 1e-4


def test_pinned_epsilon_matches_dp_accounting(tables) -> None:
    train, _ = tables
    spec = PrivacySpec(epsilon=2.0, delta=1e-3, max_interactions_per_user=20)
    settings = CTRPrivateConfig(expected_batch_users=10, epochs=4)
    _, groups, plan = plan_private_fit(spec, train, settings)
    assert groups.n_users == 50 and plan.sampling_rate == pytest.approx(0.2)
    assert plan.steps == 20
    event = dpa.SelfComposedDpEvent(
        dpa.PoissonSampledDpEvent(0.2, dpa.GaussianDpEvent(plan.noise_multiplier)), 20
    )
    rdp = dpa.rdp.RdpAccountant()
    rdp.compose(event)
    pld = dpa.pld.PLDAccountant(value_discretization_interval=1e-3)
    pld.compose(event)
    assert pld.get_epsilon(1e-3) <= 2.0 + 1e-2
    assert pld.get_epsilon(1e-3) == pytest.approx(2.0, rel=0.03)
    assert rdp.get_epsilon(1e-3) >= pld.get_epsilon(1e-3)  # RDP is the looser bound
    smaller = dpa.pld.PLDAccountant(value_discretization_interval=1e-3)
    smaller.compose(
        dpa.SelfComposedDpEvent(
            dpa.PoissonSampledDpEvent(0.2, dpa.GaussianDpEvent(plan.noise_multiplier / 1.05)), 20
        )
    )
    assert smaller.get_epsilon(1e-3) > 2.0  # the multiplier is (nearly) the smallest that meets ε


def test_private_fit_end_to_end_saves_its_guarantee(tmp_path: Path) -> None:
    train, _ = synthetic(3000, 0)
    valid, _ = synthetic(1000, 1)
    ranker = create_ranker(
        "deepfm",
        {"embedding_dim": 4, "hidden": (16,), "private": {"epochs": 2, "expected_batch_users": 10}},
    )
    spec = PrivacySpec(epsilon=4.0, max_interactions_per_user=30, clipping_norm=1.0, noise_seed=3)
    ranker.fit(train, valid, FitOptions(seed=0, privacy=spec))
    assert ranker.privacy_guarantee_ is not None
    assert ranker.privacy_guarantee_.epsilon <= 4.0 + 1e-6
    assert ranker.privacy_facts_["unit_of_privacy"] == "all training rows of one user"
    assert len(ranker.history_) == 2
    assert "user" not in ranker.vocabulary_.field_names  # no training user id is published
    loaded = load_ranker(ranker.save(tmp_path / "m"))
    assert loaded.privacy_guarantee_ == ranker.privacy_guarantee_
    np.testing.assert_allclose(loaded.predict_proba(valid), ranker.predict_proba(valid))


def test_refusals(tables) -> None:
    train, valid = tables
    spec = PrivacySpec(epsilon=1.0, max_interactions_per_user=5)
    with pytest.raises(ConfigError, match="batch normalisation"):
        train_network_private(
            _network(train, DeepFM, hidden=(8,), dropout=0.0, batch_norm=True), train, valid,
            CTRPrivateConfig(), 0.0, spec, None, None,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="user field"):
        plan_private_fit(spec, dataclasses.replace(train, user_codes=None), CTRPrivateConfig())
    ranker = create_ranker("fm", {"embedding_dim": 4, "epochs": 1})
    ranker.fit(*synthetic(500, 0)[:1], synthetic(200, 1)[0])
    with pytest.raises(ConfigError, match="publish the training users' ids"):
        plan_private_fit(spec, ranker.encode(synthetic(500, 0)[0]), CTRPrivateConfig())
    with pytest.raises(ConfigError, match="contribution bound"):
        plan_private_fit(PrivacySpec(epsilon=1.0), train, CTRPrivateConfig())
