"""Fixed cohorts under DP-FedAvg (sampling without replacement, replace-one adjacency, RDP) and
the rule that a private Poisson round is always released (no data-dependent skip)."""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest

from privrank.errors import ConfigError
from privrank.federated import FederatedSettings, simulate
from privrank.models import FedMFConfig
from privrank.privacy.accounting import Accountant, dpsgd_event, fixed_cohort_event
from privrank.privacy.dp_fedavg import plan_dp_fedavg
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger

CONFIG = FedMFConfig(factors=6, regularization=0.05, unobserved_weight=0.1)


def _spec(**overrides) -> PrivacySpec:
    values = {"epsilon": 4.0, "delta": 1e-5, "max_interactions_per_user": 50}
    return PrivacySpec(**(values | overrides))


def test_pinned_epsilons_of_both_samplings_equal_dp_accounting() -> None:
    # The pinned values were computed by dp_accounting's own accountants, called directly:
    # RdpAccountant(REPLACE_ONE) on SampledWithoutReplacement(10000, 100, Gaussian(0.5)) x 100,
    # and PLDAccountant(1e-4) on PoissonSampled(0.01, Gaussian(1.0)) x 100, both at δ = 1e-5.
    fixed = Accountant("rdp", neighboring="replace_one").compose(
        fixed_cohort_event(10_000, 100, 0.5, 100)
    )
    assert fixed.epsilon(1e-5) == pytest.approx(11.212675237449496, rel=1e-12)
    poisson = Accountant("pld", pld_discretization=1e-4).compose(dpsgd_event(0.01, 1.0, 100))
    # The PLD composes by FFT, whose last bits depend on the CPU's vector kernels: the pinned
    # value (one machine) holds to 1e-9 everywhere; dp_accounting called directly on this
    # machine is the exact oracle.
    assert poisson.epsilon(1e-5) == pytest.approx(0.7180367095394373, rel=1e-9)
    direct = dpa.pld.PLDAccountant(value_discretization_interval=1e-4)
    direct.compose(dpa.PoissonSampledDpEvent(0.01, dpa.GaussianDpEvent(1.0)), 100)
    assert poisson.epsilon(1e-5) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-12)
    with pytest.raises(ConfigError, match="does not support"):  # PLD has no fixed cohorts
        Accountant("pld").compose(fixed_cohort_event(10_000, 100, 0.5, 100))
    with pytest.raises(ConfigError, match="does not support"):  # nor RDP under add/remove
        Accountant("rdp").compose(fixed_cohort_event(10_000, 100, 0.5, 100))


def _direct_fixed_epsilon(plan, rounds: int) -> float:
    """ε of the fixed-cohort plan straight from dp_accounting (the oracle): replace-one RDP,
    the counts at σ/√(2c) and the rounds at z/2 (replace-one sensitivities √(2c) and 2C)."""
    accountant = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    c = plan.contribution_bound
    sigma_counts = plan.popularity_noise_multiplier * math.sqrt(c)
    accountant.compose(dpa.GaussianDpEvent(sigma_counts / math.sqrt(2 * c)))
    step = dpa.SampledWithoutReplacementDpEvent(
        plan.population, int(plan.expected_cohort), dpa.GaussianDpEvent(plan.noise_multiplier / 2)
    )
    accountant.compose(dpa.SelfComposedDpEvent(step, rounds))
    return accountant.get_epsilon(plan.delta)


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_a_fixed_cohort_plan_meets_epsilon_by_dp_accounting_directly(epsilon) -> None:
    plan = plan_dp_fedavg(_spec(epsilon=epsilon), 10_000, 100, 100, sampling="fixed")
    assert plan.sampling == "fixed" and plan.accountant == "rdp"
    direct = _direct_fixed_epsilon(plan, 100)
    assert direct <= epsilon * (1 + 1e-9)
    assert direct > 0.98 * epsilon  # calibrated, not wasteful
    assert plan.epsilon_after(100) == pytest.approx(direct, rel=1e-12)
    assert plan.epsilon_after(40) == pytest.approx(_direct_fixed_epsilon(plan, 40), rel=1e-12)
    # the counts alone are (0.1 ε, δ) under replace-one (sensitivity √(2c))
    assert dpa.get_epsilon_gaussian(plan.popularity_noise_multiplier / math.sqrt(2), 1e-5) <= (
        0.1 * epsilon * (1 + 1e-9)
    )
    # replace-one doubles the sensitivity: the same ε needs more noise than Poisson's
    poisson = plan_dp_fedavg(_spec(epsilon=epsilon), 10_000, 100, 100)
    assert plan.noise_multiplier > poisson.noise_multiplier


def _ledger(tmp_path, epsilon=100.0) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("synth", epsilon, 1e-2)
    return url


def test_a_private_fixed_cohort_run_samples_k_devices_and_charges_every_round(tmp_path) -> None:
    data = synthetic_interactions(n_users=60, n_items=20, per_user=5, seed=6)
    url = _ledger(tmp_path)
    settings = FederatedSettings(
        rounds=5,
        clients_per_round=12,
        sampling="fixed",
        min_clients=12,
        batch_size=8,
        adaptive_clipping=False,
    )
    reports = []
    with RoundLedger("synth", "test", url) as book:
        result = simulate(
            CONFIG, data, settings, run_dir=tmp_path / "r", spec=_spec(epsilon=8.0, delta=1e-3),
            ledger=book, progress=reports.append,
        )  # fmt: skip
    assert [r.clients for r in reports] == [12] * 5 and all(r.released for r in reports)
    guarantee = result.guarantee
    assert guarantee.accountant == "rdp" and set(guarantee.epsilons) == {"rdp"}
    assert "replace-one" in guarantee.accounting and "without replacement" in guarantee.accounting
    words = guarantee.describe()
    assert "replacing one user's entire history by another's" in words
    assert "fixed cohort of 12 of 60 devices drawn without replacement" in words
    assert "adding or removing" not in words and "Poisson" not in words
    assert guarantee.epsilon == pytest.approx(_direct_fixed_epsilon(result.plan, 5), rel=1e-12)
    assert guarantee.epsilon <= 8.0 * (1 + 1e-9)
    with Ledger(url) as ledger:
        committed = [s for s in ledger.spends("synth") if s.status.value == "committed"]
        spent = ledger.budget("synth").epsilon_spent
    assert len(committed) == 1 + 5
    assert spent == pytest.approx(guarantee.epsilon, rel=1e-9)


def test_fixed_cohorts_without_noise_and_clipping_equal_the_non_private_run(tmp_path) -> None:
    data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=5)
    settings = FederatedSettings(
        rounds=4, clients_per_round=10, sampling="fixed", batch_size=4, adaptive_clipping=False
    )
    plain = simulate(CONFIG, data, settings, run_dir=tmp_path / "plain")
    spec = _spec(epsilon=8.0, delta=1e-3, clipping_norm=1e9, noise_seed=1)
    with _noise_scale_for_testing(0.0), RoundLedger("synth", "t", _ledger(tmp_path)) as book:
        private = simulate(CONFIG, data, settings, run_dir=tmp_path / "dp", spec=spec, ledger=book)
    # the private mean divides by K, the non-private one by the accepted devices: both are K
    np.testing.assert_allclose(
        private.model.item_factors_, plain.model.item_factors_, rtol=1e-5, atol=1e-7
    )


def test_min_clients_cannot_make_a_private_release_depend_on_the_cohort(tmp_path) -> None:
    data = synthetic_interactions(n_users=60, n_items=20, per_user=5, seed=6)
    url = _ledger(tmp_path)
    spec = _spec(epsilon=8.0, delta=1e-3)
    for settings, match in (
        (FederatedSettings(rounds=2, clients_per_round=6, min_clients=6), "whatever the size"),
        (
            FederatedSettings(rounds=2, clients_per_round=6, min_clients=7, sampling="fixed"),
            "exceeds the fixed cohort",
        ),
    ):
        with RoundLedger("synth", "t", url) as book, pytest.raises(ConfigError, match=match):
            simulate(CONFIG, data, settings, run_dir=tmp_path / "r", spec=spec, ledger=book)
    assert not (tmp_path / "r").exists()
