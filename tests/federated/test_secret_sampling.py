"""A federated run under distributed DP with secret sampling: planned, charged, refused."""

from __future__ import annotations

import pytest

from privrank.errors import ConfigError
from privrank.federated import FederatedSettings, simulate
from privrank.federated.secure_aggregation import SecureAggregation
from privrank.models import FedMFConfig
from privrank.privacy.distributed_dp_accounting import ddg_sampled_epsilon
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger

pytest.importorskip("cryptography")

CONFIG = FedMFConfig(factors=4, regularization=0.05, unobserved_weight=0.1)


def _settings(**overrides) -> FederatedSettings:
    values = {"rounds": 3, "clients_per_round": 12, "batch_size": 8, "seed": 1}
    return FederatedSettings(**(values | {"adaptive_clipping": False} | overrides))


def _spec() -> PrivacySpec:
    return PrivacySpec(epsilon=8.0, delta=1e-3, max_interactions_per_user=5, clipping_norm=2)


def test_a_secretly_sampled_run_charges_the_amplified_epsilon(tmp_path):
    data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=5)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("synth", 100.0, 1e-2)
    with RoundLedger("synth", "test", url) as book:
        result = simulate(
            CONFIG, data, _settings(min_clients=2), run_dir=tmp_path / "run", spec=_spec(),
            ledger=book, secure=SecureAggregation(), distributed_dp=True, secret_sampling=True,
        )  # fmt: skip
    plan = result.distributed_plan
    assert plan is not None and plan.sampling_rate == pytest.approx(12 / 40)
    released = result.state.released_rounds
    expected = ddg_sampled_epsilon(
        plan.rounds.round_rho(), released, 12 / 40, plan.delta, rho_fixed=plan.counts.round_rho()
    )
    with Ledger(url) as book:
        assert book.budget("synth").epsilon_spent == pytest.approx(expected, rel=1e-9)
    assert result.guarantee is not None
    assert "secret Poisson sampling at q = 0.3" in result.guarantee.accounting
    assert plan.unamplified_epsilon_after(released) > result.guarantee.epsilon


def test_secret_sampling_needs_distributed_dp_and_poisson_sampling(tmp_path):
    data = synthetic_interactions(n_users=20, n_items=10, per_user=3, seed=5)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("synth", 100.0, 1e-2)
    with RoundLedger("synth", "test", url) as book:
        with pytest.raises(ConfigError, match="secret sampling"):
            simulate(
                CONFIG, data, _settings(), run_dir=tmp_path / "a", spec=_spec(), ledger=book,
                secure=SecureAggregation(), secret_sampling=True,
            )  # fmt: skip
        with pytest.raises(ConfigError, match="secret sampling"):
            simulate(
                CONFIG, data, _settings(sampling="fixed", min_clients=2), run_dir=tmp_path / "b",
                spec=_spec(), ledger=book, secure=SecureAggregation(), distributed_dp=True,
                secret_sampling=True,
            )  # fmt: skip
