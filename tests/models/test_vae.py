"""Mult-VAE: conformance, the ELBO against a float64 oracle, training, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrank.data.splits import HoldoutSplit, split
from privrank.errors import ConfigError
from privrank.models.base import FitOptions, FitProgress
from privrank.models.vae import MultVAE, vae_loss
from privrank.testing import RECOMMENDER_CHECKS, synthetic_interactions

DATA = synthetic_interactions(n_users=60, n_items=40, seed=0)


def small_vae(**overrides) -> MultVAE:
    params = dict(
        hidden=32,
        latent=8,
        epochs=40,
        batch_size=16,
        learning_rate=0.01,
        anneal_steps=50,
        dropout=0.2,
    )
    return MultVAE(**(params | overrides))


@pytest.mark.parametrize("check", RECOMMENDER_CHECKS.values(), ids=RECOMMENDER_CHECKS.keys())
def test_conformance(check, tmp_path):
    check(small_vae, DATA, tmp_path)


def test_loss_matches_the_negative_elbo_written_out():
    rng = np.random.default_rng(0)
    x = (rng.random((4, 6)) < 0.4).astype(np.float64)
    logits, mu, logvar = rng.normal(size=(4, 6)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    beta = 0.3
    expected = []
    for u in range(4):
        log_pi = logits[u] - np.log(np.exp(logits[u]).sum())
        kl = sum(0.5 * (np.exp(logvar[u, j]) + mu[u, j] ** 2 - 1 - logvar[u, j]) for j in range(3))
        expected.append(-(x[u] * log_pi).sum() + beta * kl)
    tensors = [torch.from_numpy(a) for a in (x, logits, mu, logvar)]
    assert vae_loss(*tensors, beta).item() == pytest.approx(np.mean(expected), rel=1e-12)


def test_training_lowers_the_loss_and_validation_keeps_the_best_epoch():
    parts = split(DATA, HoldoutSplit(fraction=0.2, seed=0))
    reports: list[FitProgress] = []
    model = small_vae(epochs=12, patience=3, beta=0.0).fit(
        parts.train,
        FitOptions(seed=0, threads=1, progress=reports.append, validation=parts.test),
    )
    assert model.loss_history_[-1] < model.loss_history_[0]
    history = model.validation_history_
    assert len(history) == len(reports) and all("hr@10" in r.metrics for r in reports)
    assert model.best_epoch_ == int(history[np.argmax(history[:, 1]), 0])


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match=r"MultVAE\.dropout: got 1\.0; expected a float"):
        MultVAE(dropout=1.0)


@pytest.mark.parametrize(
    ("overrides", "expected_length"),
    [
        # the rule: 0.25 of the planned steps, 6 epochs x ceil(60 users / 16) = 4 steps each
        ({"anneal_steps": None, "anneal_fraction": 0.25}, 6),
        ({"anneal_steps": None, "anneal_fraction": 1.0}, 24),
        ({"anneal_steps": 10}, 10),  # a constant, the paper's way
    ],
)
def test_the_kl_weight_anneals_over_the_rule_or_the_constant(
    monkeypatch, overrides, expected_length
):
    import privrank.models.vae as vae_module

    seen: list[float] = []
    original = vae_module.vae_loss

    def recording(x, logits, mu, logvar, beta):
        seen.append(beta)
        return original(x, logits, mu, logvar, beta)

    monkeypatch.setattr(vae_module, "vae_loss", recording)
    model = small_vae(epochs=6, patience=0, beta=0.3, **overrides)
    assert model.config.anneal_length(steps_per_epoch=4) == expected_length
    model.fit(DATA, FitOptions(seed=0, threads=1))
    active = int(np.count_nonzero(DATA.user_counts()))
    steps = 6 * -(-active // 16)
    assert len(seen) == steps == 24
    expected = [0.3 * min(1.0, t / expected_length) for t in range(steps)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)


def test_anneal_fraction_must_be_positive():
    with pytest.raises(ConfigError, match="anneal_fraction"):
        MultVAE(anneal_steps=None, anneal_fraction=0.0)
