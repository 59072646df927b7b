"""DP-FedAvg: accounting against dp-accounting, noise, equality without noise, ledger charges,
and the refusal of bad updates."""

from __future__ import annotations

import logging
import math

import dp_accounting as dpa
import numpy as np
import pytest

from privrank.errors import PrivacyBudgetExceeded
from privrank.federated import (
    DenseUpdates,
    FederatedSettings,
    SumAggregator,
    clip_on_device,
    simulate,
)
from privrank.models import FedMFConfig
from privrank.privacy.dp_fedavg import AdaptiveClipping, DPFedAvgMechanism, plan_dp_fedavg
from privrank.privacy.dpsgd import PLD_DISCRETIZATION
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger

CONFIG = FedMFConfig(factors=6, regularization=0.05, unobserved_weight=0.1)


def _spec(**overrides) -> PrivacySpec:
    values = {"epsilon": 4.0, "delta": 1e-5, "max_interactions_per_user": 50}
    return PrivacySpec(**(values | overrides))


def _direct_epsilon(plan, rounds: int) -> float:
    """ε straight from dp_accounting's PLD accountant (the oracle)."""
    accountant = dpa.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    accountant.compose(dpa.GaussianDpEvent(plan.popularity_noise_multiplier))
    step = dpa.PoissonSampledDpEvent(plan.sampling_rate, dpa.GaussianDpEvent(plan.noise_multiplier))
    accountant.compose(dpa.SelfComposedDpEvent(step, rounds))
    return accountant.get_epsilon(plan.delta)


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_the_calibrated_rounds_meet_epsilon_by_dp_accounting_directly(epsilon):
    plan = plan_dp_fedavg(_spec(epsilon=epsilon), 10_000, 100, 100)
    direct = _direct_epsilon(plan, 100)
    assert direct <= epsilon * (1 + 1e-9)
    assert direct > 0.98 * epsilon  # calibrated, not wasteful
    assert plan.epsilon_after(100) == pytest.approx(direct, rel=1e-12)
    assert plan.epsilon_after(50) == pytest.approx(_direct_epsilon(plan, 50), rel=1e-12)
    # the popularity alone is its (0.1 ε, δ) share, by the analytic Gaussian bound
    assert dpa.get_epsilon_gaussian(plan.popularity_noise_multiplier, plan.delta) <= 0.1 * epsilon


def test_adaptive_clipping_splits_the_round_multiplier_between_updates_and_bits():
    plan = plan_dp_fedavg(_spec(), 10_000, 1_000, 100, AdaptiveClipping())
    sigma_b = 0.05 * 1_000
    assert plan.bit_noise_std == sigma_b
    assert plan.noise_multiplier**-2 == pytest.approx(
        plan.update_noise_multiplier**-2 + (2 * sigma_b) ** -2, rel=1e-12
    )
    assert plan.update_noise_multiplier > plan.noise_multiplier


def test_noise_has_the_calibrated_mean_and_standard_deviation():
    plan = plan_dp_fedavg(_spec(), 10_000, 100, 50)
    mechanism = DPFedAvgMechanism(plan, clipping_norm=0.5)
    noisy = mechanism.add_noise(np.zeros(400_000), np.random.default_rng(0))
    expected = plan.update_noise_multiplier * 0.5
    assert abs(noisy.mean()) < 4 * expected / math.sqrt(len(noisy))
    assert noisy.std() == pytest.approx(expected, rel=0.01)


def _ledger(tmp_path, epsilon=100.0) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("synth", epsilon, 1e-3)
    return url


def _settings(**overrides) -> FederatedSettings:
    values = {"rounds": 5, "clients_per_round": 30, "server_learning_rate": 0.5, "batch_size": 8}
    return FederatedSettings(**(values | overrides))


def test_without_noise_and_clipping_dp_fedavg_equals_the_non_private_run(tmp_path):
    data = synthetic_interactions(n_users=30, n_items=20, per_user=5, seed=5)
    settings = _settings(adaptive_clipping=False)  # q = 1: every device in every round
    plain = simulate(CONFIG, data, settings, run_dir=tmp_path / "plain")
    spec = _spec(epsilon=8.0, delta=1e-3, clipping_norm=1e9, noise_seed=1)
    with _noise_scale_for_testing(0.0), RoundLedger("synth", "test", _ledger(tmp_path)) as book:
        private = simulate(CONFIG, data, settings, run_dir=tmp_path / "dp", spec=spec, ledger=book)
    np.testing.assert_allclose(
        private.model.item_factors_, plain.model.item_factors_, rtol=1e-5, atol=1e-7
    )
    assert private.guarantee is not None and not private.guarantee.is_private


def test_every_private_round_is_released_and_charged_even_with_a_small_cohort(tmp_path):
    data = synthetic_interactions(n_users=60, n_items=20, per_user=5, seed=6)
    url = _ledger(tmp_path)
    # about 3 devices a round, some rounds with none: each is still released (the noisy sum of
    # what was sampled), since skipping would depend on who was sampled
    settings = _settings(rounds=8, clients_per_round=3, adaptive_clipping=False)
    spec = _spec(epsilon=8.0, delta=1e-3)
    reports = []
    with RoundLedger("synth", "test", url) as book:
        result = simulate(
            CONFIG,
            data,
            settings,
            run_dir=tmp_path / "r",
            spec=spec,
            ledger=book,
            progress=reports.append,
        )
    assert (result.model.item_popularity_ >= 0).all()  # noisy counts clipped at 0
    assert all(r.released for r in reports) and len(reports) == 8
    assert min(r.clients for r in reports) <= 1  # small cohorts were released too
    assert result.state.released_rounds == 8
    with Ledger(url) as ledger:
        spends = ledger.spends("synth")
        budget = ledger.budget("synth")
    committed = [s for s in spends if s.status.value == "committed"]
    assert len(committed) == 1 + 8  # the counts, then each round
    assert all(s.status.value != "reserved" for s in spends)
    assert budget is not None
    assert budget.epsilon_spent == pytest.approx(result.guarantee.epsilon, rel=1e-9)
    assert result.guarantee.epsilon == pytest.approx(result.plan.epsilon_after(8), rel=1e-12)


def test_a_run_the_budget_cannot_cover_is_refused_before_any_round(tmp_path):
    data = synthetic_interactions(n_users=30, n_items=20, per_user=5, seed=5)
    url = _ledger(tmp_path, epsilon=2.0)
    with RoundLedger("synth", "test", url) as book, pytest.raises(PrivacyBudgetExceeded):
        simulate(CONFIG, data, _settings(), run_dir=tmp_path / "r", spec=_spec(), ledger=book)
    assert not (tmp_path / "r").exists()
    with Ledger(url) as ledger:
        assert ledger.spends("synth") == []


def test_bad_updates_are_refused_counted_logged_without_values_and_never_summed(caplog):
    good = np.array([[0.3, 0.4, 0.0], [0.1, 0.0, 0.2]])
    arrays = [
        good[0],
        np.array([np.nan, 0.0, 0.0]),
        np.array([0.0, np.inf, 1.0]),
        np.array([1.0, 2.0]),  # wrong shape
        np.array([3.0, 4.0, 0.0]),  # norm 5 over the bound 1
        good[1],
        np.array(["a", "b", "c"]),  # not numbers
    ]
    aggregator = SumAggregator(3, bound=1.0, round_index=7)
    with caplog.at_level(logging.WARNING):
        accepted = aggregator.add(DenseUpdates.from_arrays(arrays, 3))
    total = aggregator.finish()
    assert accepted.tolist() == [True, False, False, False, False, True, False]
    assert total.refused == {"shape": 2, "non_finite": 2, "over_bound": 1}
    assert total.accepted == 2
    np.testing.assert_allclose(total.total, good.sum(axis=0))
    assert "round 7: refused 5 update(s)" in caplog.text
    for value in ("nan", "inf", "3.0", "0.3"):
        assert value not in caplog.text.lower().replace("non_finite", "")


def test_a_device_clips_its_own_update_and_reports_the_bit():
    updates = DenseUpdates(np.array([[3.0, 4.0], [0.3, 0.4], [np.nan, 1.0]]))
    clipped, unclipped = clip_on_device(updates, 1.0)
    assert unclipped.tolist() == [False, True, False]
    np.testing.assert_allclose(clipped.norms()[:2], [1.0, 0.5])
    aggregator = SumAggregator(2, bound=1.0)
    aggregator.add(clipped, unclipped)
    total = aggregator.finish()
    assert total.refused["non_finite"] == 1
    np.testing.assert_allclose(total.total, [0.6 + 0.3, 0.8 + 0.4])
    assert total.unclipped == 1
