"""The canary audit of a federated run: an honest run passes, a run with the noise turned
down is caught."""

from __future__ import annotations

import pytest

from privrank.federated import FederatedSettings
from privrank.federated.audit import audit_federated, gdp_epsilon
from privrank.models import FedMFConfig
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger

CONFIG = FedMFConfig(factors=8, regularization=0.05, unobserved_weight=0.1)
DATA = synthetic_interactions(n_users=40, n_items=150, per_user=6, seed=8)
SETTINGS = FederatedSettings(
    rounds=4, clients_per_round=40, server_learning_rate=0.5, adaptive_clipping=False
)


def _audit(tmp_path, name: str):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("synth", 100.0, 0.1)
    spec = PrivacySpec(epsilon=1.0, delta=1e-3, max_interactions_per_user=10, noise_seed=3)
    with RoundLedger("synth", "audit", url) as ledger:
        return audit_federated(
            CONFIG, DATA, SETTINGS, spec, ledger, run_dir=tmp_path / name, canaries=400
        )


def test_an_honest_run_passes_and_a_run_with_the_noise_turned_down_is_caught(tmp_path):
    honest = _audit(tmp_path, "honest")
    assert honest.verdict == "passed"
    assert honest.empirical_epsilon <= honest.claimed_epsilon
    with _noise_scale_for_testing(0.02):
        broken = _audit(tmp_path, "broken")
    assert broken.noise_scale_for_testing == 0.02
    assert broken.verdict == "violated"
    assert broken.empirical_epsilon > broken.claimed_epsilon
    assert broken.estimated_epsilon > 5 * max(honest.estimated_epsilon, 0.1)


def test_the_gdp_estimate_is_the_gaussian_mechanisms_epsilon():
    assert gdp_epsilon(0.0, 1e-5) == 0.0
    assert gdp_epsilon(1.0, 1e-5) == pytest.approx(4.4, abs=0.1)  # 1-GDP at δ=1e-5
