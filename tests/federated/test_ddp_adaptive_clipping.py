"""Adaptive clipping under SecAgg+ with distributed DP: the clipping bit as one more secure,
noised coordinate, its accounting, and the clipping norm's update from the released bit sum."""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest

from privrank.federated import DenseUpdates, FederatedSettings, simulate
from privrank.federated.clients import clip_on_device
from privrank.federated.rounds import adapt_clipping_norm
from privrank.federated.secure_aggregation import SecAggAggregator, SecureAggregation
from privrank.models import FedMFConfig
from privrank.privacy.distributed_dp_accounting import ddg_epsilon
from privrank.privacy.distributed_dp_plan import plan_distributed_dp
from privrank.privacy.dp_fedavg import AdaptiveClipping
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger

pytest.importorskip("cryptography")

CONFIG = FedMFConfig(factors=4, regularization=0.05, unobserved_weight=0.1)
RULE = AdaptiveClipping(target_quantile=0.5, learning_rate=0.2)


def _spec(**overrides) -> PrivacySpec:
    values = {"epsilon": 8.0, "delta": 1e-3, "max_interactions_per_user": 5, "clipping_norm": 1}
    return PrivacySpec(**(values | overrides)).resolve(40)


def _plan(noise: float = 1.0, rounds: int = 5, **overrides):
    values = {
        "population": 200, "n_items": 5, "dimension": 16, "rounds": rounds, "min_clients": 10,
        "max_clients": 200, "modulus_bits": 48, "adaptive": RULE, "expected_cohort": 100,
    }  # fmt: skip
    with _noise_scale_for_testing(noise):
        return plan_distributed_dp(_spec(), **(values | overrides))


@pytest.mark.parametrize(
    "secure",
    [SecureAggregation(degree_factor=1.0, dropout=0.2), SecureAggregation(masks=False)],
    ids=["protocol-with-dropouts", "masks-elided"],
)
def test_without_noise_the_unmasked_bit_coordinate_counts_the_unclipped_survivors(secure):
    plan = _plan(noise=0.0)
    assert plan.bits is not None
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 16))
    x *= rng.uniform(0.5, 2.5, (30, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
    bound = 1.5  # C_t ≠ C_0 = 1: the updates are encoded times C_0 / C_t
    sent, unclipped = clip_on_device(DenseUpdates(x), bound)
    aggregator = SecAggAggregator(
        16, bound, secure, max_clients=40, round_index=2, seed=1, min_survivors=10,
        mechanism=plan.rounds, noise_rng=np.random.default_rng(0), bit_mechanism=plan.bits,
    )  # fmt: skip
    aggregator.add(sent, unclipped)
    total = aggregator.finish()
    norms = np.linalg.norm(x, axis=1)
    if aggregator.last_round is not None:  # the real protocol: only the survivors are summed
        survivors = np.asarray(sorted(aggregator.last_round.result.survivors))
        assert 0 < len(survivors) < 30  # some dropped and were recovered
    else:
        survivors = np.arange(30)
    expected = int((norms[survivors] <= bound).sum())  # the oracle, from the raw norms
    assert 0 < expected < len(survivors)
    assert total.noisy_unclipped == float(expected)  # exactly the count: zero noise
    assert total.accepted == len(survivors)
    clipped = x[survivors] * np.minimum(1.0, bound / norms[survivors])[:, None]
    # the update part: the survivors' clipped sum up to the rounding (< 1 grid unit of C_0,
    # i.e. C_t / C_0 / scale in update units, per device and coordinate)
    tolerance = len(survivors) * (bound / 1.0) / plan.rounds.scale
    assert np.abs(total.total - clipped.sum(axis=0)).max() <= tolerance


def test_the_bit_sum_carries_the_bit_mechanisms_calibrated_noise():
    plan = _plan()
    assert plan.bits is not None
    x = np.zeros((20, 16))
    sums = []
    for seed in range(300):
        aggregator = SecAggAggregator(
            16, 1.0, SecureAggregation(masks=False), max_clients=40, min_survivors=10,
            mechanism=plan.rounds, noise_rng=np.random.default_rng(seed), bit_mechanism=plan.bits,
        )  # fmt: skip
        sent, unclipped = clip_on_device(DenseUpdates(x), 1.0)
        aggregator.add(sent, unclipped)
        total = aggregator.finish()
        assert total.noisy_unclipped is not None
        sums.append(total.noisy_unclipped - 20.0)
    std = plan.bits.sum_noise_std(20)  # 20 devices' shares, in counts
    # σ_b accounted with min_clients = 10 devices is f·m = 0.05·100 = 5 counts (within the
    # 0.1 % of the calibration); with 20 survivors the noise is √2 larger
    assert plan.bits.sum_noise_std(10) == pytest.approx(5.0, rel=0.02)
    assert np.mean(sums) == pytest.approx(0.0, abs=4 * std / math.sqrt(300))
    assert np.std(sums) == pytest.approx(std, rel=0.15)


def test_the_clipping_norm_converges_to_the_common_norm_of_equal_updates():
    plan = _plan(noise=0.0, rounds=60)
    assert plan.bits is not None
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 16))
    x *= 0.3 / np.linalg.norm(x, axis=1, keepdims=True)  # every norm 0.3
    bound, trajectory = 1.0, [1.0]
    for round_index in range(1, 61):
        aggregator = SecAggAggregator(
            16, bound, SecureAggregation(masks=False), max_clients=40,
            round_index=round_index, min_survivors=10, mechanism=plan.rounds,
            noise_rng=np.random.default_rng(round_index), bit_mechanism=plan.bits,
        )  # fmt: skip
        sent, unclipped = clip_on_device(DenseUpdates(x), bound)
        aggregator.add(sent, unclipped)
        total = aggregator.finish()
        assert total.noisy_unclipped is not None
        bound = adapt_clipping_norm(bound, total.noisy_unclipped / total.accepted, plan)
        trajectory.append(bound)
    # all unclipped while C ≥ 0.3: C shrinks by exactly exp(-η(1 - γ)) = exp(-0.1) per round
    steps = math.ceil(math.log(1.0 / 0.3) / 0.1)
    np.testing.assert_allclose(trajectory[: steps + 1], np.exp(-0.1 * np.arange(steps + 1)))
    # then it oscillates around the common norm, within one step of it either side
    late = np.asarray(trajectory[steps:])
    assert (late >= 0.3 * math.exp(-0.1) - 1e-12).all() and (late <= 0.3 * math.exp(0.1)).all()


def test_the_accounted_epsilon_composes_the_bit_with_the_updates():
    plan = _plan(rounds=20)
    assert plan.bits is not None
    rho_counts, rho_update, rho_bit = (
        plan.counts.round_rho(), plan.rounds.round_rho(), plan.bits.round_rho(),
    )  # fmt: skip
    # the bit: σ_b = f·m = 5 counts → ρ_b ≤ 1/(2·5²) (calibrated within 0.1 %)
    assert 0.998 * 0.02 <= rho_bit <= 0.02
    # an independent recomputation: dp_accounting's RDP accountant over the three zCDP events
    accountant = dpa.rdp.RdpAccountant()
    accountant.compose(
        dpa.ComposedDpEvent([
            dpa.ZCDpEvent(rho_counts),
            dpa.SelfComposedDpEvent(dpa.ZCDpEvent(rho_update), 20),
            dpa.SelfComposedDpEvent(dpa.ZCDpEvent(rho_bit), 20),
        ])
    )  # fmt: skip
    adaptive = plan.epsilon_after(20)
    assert adaptive == pytest.approx(accountant.get_epsilon(1e-3), rel=1e-9)
    # at the same update noise, fixed clipping (no bit released) spends less
    fixed_same_noise = ddg_epsilon(rho_counts + 20 * rho_update, 1, 1e-3)
    assert fixed_same_noise < adaptive <= 8.0 * (1 + 1e-9)
    # pinned (dp_accounting 0.4.x RDP conversion)
    assert adaptive == pytest.approx(7.99911, abs=1e-4)
    assert fixed_same_noise == pytest.approx(6.84465, abs=1e-4)
    # at the same ε, the fixed-clipping plan has less update noise (a larger ρ per round)
    fixed_plan = _plan(rounds=20, adaptive=None)
    assert fixed_plan.bits is None and fixed_plan.rounds.round_rho() > rho_update
    assert fixed_plan.epsilon_after(20) <= 8.0 * (1 + 1e-9)


def test_the_bit_noise_may_not_use_the_whole_round_budget():
    from privrank.errors import ConfigError

    with pytest.raises(ConfigError, match="bit noise"):
        _plan(rounds=200, expected_cohort=2)


def _ledger(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("synth", 100.0, 1e-2)
    return url


def test_zero_noise_and_no_clipping_equals_the_non_private_run(tmp_path):
    data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=5)
    # every device in every round (q = 1): distributed DP's item counts come from the first
    # cohort, the non-private run's from every device, so only then are they the same
    settings = FederatedSettings(
        rounds=3, clients_per_round=40, batch_size=8, seed=1, min_clients=5
    )
    plain = simulate(CONFIG, data, settings, run_dir=tmp_path / "plain")
    spec = _spec(clipping_norm=1e4)  # far above every update's norm: nothing is clipped
    with _noise_scale_for_testing(0.0), RoundLedger("synth", "t", _ledger(tmp_path)) as book:
        private = simulate(
            CONFIG, data, settings, run_dir=tmp_path / "ddp", spec=spec, ledger=book,
            secure=SecureAggregation(masks=False), distributed_dp=True,
        )  # fmt: skip
    assert private.distributed_plan is not None and private.distributed_plan.bits is not None
    np.testing.assert_allclose(
        private.model.item_factors_, plain.model.item_factors_, rtol=1e-5, atol=1e-6
    )
    # every device unclipped, no noise: b̄ = 1 each round, C_t = C_0 exp(-0.2 (1 - 0.5) t)
    assert private.state.clipping_norm == pytest.approx(1e4 * math.exp(-0.1 * 3), rel=1e-12)


def test_a_noisy_run_spends_what_its_guarantee_states(tmp_path):
    data = synthetic_interactions(n_users=60, n_items=20, per_user=5, seed=6)
    settings = FederatedSettings(
        rounds=4, clients_per_round=40, batch_size=16, seed=2, min_clients=10
    )
    url = _ledger(tmp_path)
    reports = []
    with RoundLedger("synth", "t", url) as book:
        result = simulate(
            CONFIG, data, settings, run_dir=tmp_path / "run", spec=_spec(clipping_norm=0.5),
            ledger=book, secure=SecureAggregation(masks=False), distributed_dp=True,
            progress=reports.append,
        )  # fmt: skip
    plan = result.distributed_plan
    assert plan is not None and plan.bits is not None and result.guarantee is not None
    assert reports[0].clipping_norm == 0.5
    assert len({r.clipping_norm for r in reports}) == 4  # C moved every round
    with Ledger(url) as ledger:
        budget = ledger.budget("synth")
    assert budget is not None
    assert budget.epsilon_spent == pytest.approx(plan.epsilon_after(4), rel=1e-9)
    assert result.guarantee.epsilon == pytest.approx(budget.epsilon_spent, rel=1e-9)
    assert "clipping bit" in result.guarantee.accounting
    assert "clipping bits" in result.guarantee.released
