"""Secure aggregation in the simulator: SecAgg+ sums, dropouts, distributed DP and its charges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrank.errors import ConfigError
from privrank.federated import DenseUpdates, FederatedSettings, SumAggregator, simulate
from privrank.federated.secure_aggregation import SecAggAggregator, SecureAggregation
from privrank.models import FedMFConfig
from privrank.models._fedmf_rounds import FedMFClient, MFBroadcast
from privrank.privacy.distributed_dp import DistributedDiscreteGaussian, DistributedDPConfig
from privrank.privacy.distributed_dp_accounting import ddg_epsilon
from privrank.privacy.distributed_dp_plan import plan_distributed_dp
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger

pytest.importorskip("cryptography")

CONFIG = FedMFConfig(factors=4, regularization=0.05, unobserved_weight=0.1)


def _updates(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.9, 0.9, (n, dim))


def test_the_unmasked_sum_is_exactly_the_sum_of_the_quantised_updates():
    x = _updates(12, 40, 0)
    aggregator = SecAggAggregator(40, None, SecureAggregation(value_range=1.0), max_clients=12)
    aggregator.add(DenseUpdates(x))
    total = aggregator.finish()
    ring = aggregator.ring
    assert ring is not None
    quantised = np.rint(x * ring.scale).astype(np.int64)  # the oracle: plain integer sum
    np.testing.assert_array_equal(total.total * ring.scale, quantised.sum(axis=0))
    # against the float sum: at most half a unit per device and coordinate
    assert np.abs(total.total - x.sum(axis=0)).max() <= 12 * 0.5 / ring.scale
    assert total.accepted == 12


def test_dropouts_after_sharing_are_recovered_and_only_survivors_are_summed():
    x = _updates(30, 16, 1)
    settings = SecureAggregation(value_range=1.0, dropout=0.3)
    aggregator = SecAggAggregator(16, None, settings, max_clients=30, round_index=3, seed=4)
    aggregator.add(DenseUpdates(x))
    total = aggregator.finish()
    assert aggregator.last_round is not None and aggregator.ring is not None
    result = aggregator.last_round.result
    survivors = sorted(result.survivors)
    assert result.recovered and len(survivors) == 30 - len(result.recovered)
    assert total.accepted == len(survivors) and total.refused["dropped"] == len(result.recovered)
    quantised = np.rint(x[survivors] * aggregator.ring.scale).astype(np.int64)
    np.testing.assert_array_equal(total.total * aggregator.ring.scale, quantised.sum(axis=0))


def test_bad_updates_are_refused_and_counted_before_encoding():
    x = _updates(6, 8, 2)
    x[1, 0] = np.nan
    x[2] *= 10.0  # over the declared L2 bound
    bound = float(np.linalg.norm(x[[0, 3, 4, 5]], axis=1).max())
    aggregator = SecAggAggregator(8, bound, SecureAggregation(), max_clients=6)
    ok = aggregator.add(DenseUpdates(x))
    assert ok.tolist() == [True, False, False, True, True, True]
    total = aggregator.finish()
    assert total.refused["non_finite"] == 1 and total.refused["over_bound"] == 1
    plain = SumAggregator(8, bound)
    plain.add(DenseUpdates(x))
    np.testing.assert_allclose(total.total, plain.finish().total, atol=4 / aggregator.ring.scale)


def test_the_dense_fedmf_update_is_the_factored_one():
    data = synthetic_interactions(n_users=9, n_items=15, per_user=4, seed=3)
    from privrank.federated.simulator import _histories

    client = FedMFClient(CONFIG, data.n_items)
    rng = np.random.default_rng(0)
    broadcast = MFBroadcast.of(rng.normal(0, 0.3, (data.n_items, CONFIG.factors)))
    updates, _ = client.local_update(_histories(data), broadcast)
    dense = updates.dense(2, 7)
    for row, b in enumerate(range(2, 7)):
        weights = np.zeros(len(updates))
        weights[b] = 1.0
        np.testing.assert_allclose(dense[row], updates.weighted_sum(weights), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), updates.norms()[2:7], rtol=1e-9)


def _settings(**overrides) -> FederatedSettings:
    values = {"rounds": 3, "clients_per_round": 20, "batch_size": 8, "seed": 1}
    return FederatedSettings(**(values | overrides))


def test_the_secagg_model_equals_the_plain_sum_model_up_to_quantisation(tmp_path):
    data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=5)
    settings = _settings()
    plain = simulate(CONFIG, data, settings, run_dir=tmp_path / "plain")
    # 32 bits: a grid of about 2^-22, so the rounding shows above float32's resolution
    secure = simulate(
        CONFIG, data, settings, run_dir=tmp_path / "secagg",
        secure=SecureAggregation(modulus_bits=32),
    )  # fmt: skip
    # the item counts are integers: exact through the ring
    np.testing.assert_array_equal(
        secure.state.arrays["item_counts"], plain.state.arrays["item_counts"]
    )
    np.testing.assert_allclose(
        secure.model.item_factors_, plain.model.item_factors_, rtol=1e-4, atol=1e-5
    )
    assert not np.array_equal(secure.model.item_factors_, plain.model.item_factors_)


def test_a_secagg_round_with_dropouts_is_released(tmp_path):
    data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=5)
    reports = []
    result = simulate(
        CONFIG,
        data,
        _settings(rounds=2, min_clients=5),
        run_dir=tmp_path / "r",
        secure=SecureAggregation(dropout=0.25),
        progress=reports.append,
    )
    assert all(r.released for r in reports) and result.state.released_rounds == 2
    assert all(r.refused.get("dropped", 0) > 0 for r in reports)
    assert all(r.accepted == r.clients - r.refused["dropped"] for r in reports)


def _ddg(noise: float = 1.0, **overrides) -> DistributedDiscreteGaussian:
    values = {
        "epsilon": 4.0,
        "delta": 1e-5,
        "l2_clip": 1.0,
        "dimension": 64,
        "rounds": 5,
        "min_clients": 10,
        "max_clients": 40,
        "modulus_bits": 48,
    }
    with _noise_scale_for_testing(noise):
        return DistributedDiscreteGaussian(DistributedDPConfig(**(values | overrides)))


def test_distributed_dp_without_noise_sums_the_clipped_updates():
    x = _updates(20, 64, 6)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # norm 1 = the clip: no clipping
    mechanism = _ddg(noise=0.0)
    aggregator = SecAggAggregator(
        64, 1.0, SecureAggregation(), max_clients=20, min_survivors=10, mechanism=mechanism,
        noise_rng=np.random.default_rng(0),
    )  # fmt: skip
    aggregator.add(DenseUpdates(x))
    total = aggregator.finish()
    # unbiased rounding only: each coordinate within one grid unit per device
    assert np.abs(total.total - x.sum(axis=0)).max() <= 20 / mechanism.scale


@pytest.mark.parametrize(
    "secure",
    [SecureAggregation(degree_factor=1.0), SecureAggregation(masks=False)],
    ids=["protocol", "masks-elided"],
)
def test_distributed_dp_noise_of_the_unmasked_sum_has_the_calibrated_spread(secure):
    """The real protocol's unmasked sum and the elided-masks sum (the survivors' noise drawn at
    once as its sum) carry the same calibrated discrete Gaussian spread."""
    n, dim = 20, 64
    mechanism = _ddg(dimension=dim)
    totals = []
    for round_index in range(30):
        aggregator = SecAggAggregator(
            dim, 1.0, secure, max_clients=n, round_index=round_index, min_survivors=10,
            mechanism=mechanism, noise_rng=np.random.default_rng(round_index),
        )  # fmt: skip
        aggregator.add(DenseUpdates(np.zeros((n, dim))))
        totals.append(aggregator.finish().total)
    noise = np.concatenate(totals)
    expected = mechanism.sum_noise_std(n)
    assert abs(noise.mean()) < 4 * expected / math.sqrt(noise.size)
    # sample std of 1920 draws: relative standard error about 1.6 %
    assert noise.std() == pytest.approx(expected, rel=0.07)


def _spec(**overrides) -> PrivacySpec:
    values = {"epsilon": 8.0, "delta": 1e-3, "max_interactions_per_user": 5, "clipping_norm": 2}
    return PrivacySpec(**(values | overrides)).resolve(40)


def test_the_plan_composes_counts_and_rounds_within_epsilon():
    plan = plan_distributed_dp(
        _spec(), population=1000, n_items=50, dimension=300, rounds=20, min_clients=50,
        max_clients=1000, modulus_bits=48,
    )  # fmt: skip
    rho = plan.counts.round_rho() + 20 * plan.rounds.round_rho()
    assert plan.epsilon_after(20) == pytest.approx(ddg_epsilon(rho, 1, 1e-3), rel=1e-12)
    assert 0.97 * 8.0 < plan.epsilon_after(20) <= 8.0 * (1 + 1e-9)
    assert plan.epsilon_after(0) < plan.epsilon_after(10) < plan.epsilon_after(20)
    assert ddg_epsilon(plan.counts.round_rho(), 1, 1e-3) <= 0.8 * (1 + 1e-9)
    with pytest.raises(ConfigError, match="min_clients"):
        plan_distributed_dp(
            _spec(), population=10, n_items=5, dimension=5, rounds=1, min_clients=1,
            max_clients=10, modulus_bits=48,
        )  # fmt: skip


def _url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def _ledger(tmp_path, epsilon=100.0) -> str:
    url = _url(tmp_path)
    with Ledger(url) as book:
        book.set_budget("synth", epsilon, 1e-2)
    return url


def test_distributed_dp_run_charges_only_released_rounds(tmp_path):
    data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=5)
    url = _ledger(tmp_path)
    # rounds whose survivors fall below min_clients abort (30 % dropout of ~20 devices)
    settings = _settings(rounds=6, min_clients=14, adaptive_clipping=False)
    reports = []
    with RoundLedger("synth", "test", url) as book:
        result = simulate(
            CONFIG, data, settings, run_dir=tmp_path / "ddp", spec=_spec(), ledger=book,
            secure=SecureAggregation(dropout=0.3), distributed_dp=True, progress=reports.append,
        )  # fmt: skip
    released = [r for r in reports if r.released]
    assert released and len(released) < len(reports)
    plan = result.distributed_plan
    assert plan is not None and result.guarantee is not None
    with Ledger(url) as ledger:
        spends = ledger.spends("synth")
        budget = ledger.budget("synth")
    committed = [s for s in spends if s.status.value == "committed"]
    assert len(committed) == 1 + len(released)  # the counts, then each released round
    assert budget is not None
    assert budget.epsilon_spent == pytest.approx(plan.epsilon_after(len(released)), rel=1e-9)
    assert result.guarantee.epsilon == pytest.approx(budget.epsilon_spent, rel=1e-9)
    assert "untrusted for individual updates" in result.guarantee.released
    assert np.isfinite(result.model.item_factors_).all()


def test_distributed_dp_needs_secagg(tmp_path):
    # (adaptive clipping under distributed DP is no longer refused: test_ddp_adaptive_clipping)
    data = synthetic_interactions(n_users=20, n_items=10, per_user=3, seed=5)
    with (
        RoundLedger("synth", "test", _ledger(tmp_path)) as book,
        pytest.raises(ConfigError, match="secure aggregation"),
    ):
        simulate(
            CONFIG, data, _settings(adaptive_clipping=False), run_dir=tmp_path / "a",
            spec=_spec(), ledger=book, distributed_dp=True,
        )  # fmt: skip


def test_central_dp_fedavg_over_secagg_without_noise_equals_it_over_plain_sums(tmp_path):
    data = synthetic_interactions(n_users=30, n_items=20, per_user=5, seed=5)
    settings = _settings(clients_per_round=30, adaptive_clipping=False, sampling="fixed")
    spec = PrivacySpec(epsilon=8.0, delta=1e-3, max_interactions_per_user=5, noise_seed=1)
    runs = {}
    for name, secure in (("plain", None), ("secagg", SecureAggregation(modulus_bits=40))):
        (tmp_path / name).mkdir()
        url = _ledger(tmp_path / name)
        with _noise_scale_for_testing(0.0), RoundLedger("synth", name, url) as book:
            runs[name] = simulate(
                CONFIG, data, settings, run_dir=tmp_path / name / "run", spec=spec, ledger=book,
                secure=secure,
            )  # fmt: skip
    np.testing.assert_allclose(
        runs["secagg"].model.item_factors_, runs["plain"].model.item_factors_, rtol=1e-4,
        atol=1e-5,
    )  # fmt: skip
    assert runs["secagg"].state.released_rounds == runs["plain"].state.released_rounds == 3
    # the counts were noised and charged in both (zero noise here, so equal)
    np.testing.assert_allclose(
        runs["secagg"].state.arrays["item_counts"], runs["plain"].state.arrays["item_counts"]
    )
    for name in runs:
        with Ledger(_url(tmp_path / name)) as ledger:
            committed = [s for s in ledger.spends("synth") if s.status.value == "committed"]
        assert len(committed) == 4  # the counts and 3 rounds


def _direct_fixed_epsilon(plan, rounds: int) -> float:
    """ε of a fixed-cohort plan straight from dp_accounting (the oracle): replace-one RDP, the
    counts at σ/√(2c), then ``rounds`` rounds at z/2 (sensitivities √(2c) and 2C)."""
    import dp_accounting as dpa

    accountant = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    c = plan.contribution_bound
    accountant.compose(dpa.GaussianDpEvent(plan.popularity_noise_multiplier / math.sqrt(2)))
    if rounds:
        step = dpa.SampledWithoutReplacementDpEvent(
            plan.population,
            int(plan.expected_cohort),
            dpa.GaussianDpEvent(plan.noise_multiplier / 2),
        )
        accountant.compose(dpa.SelfComposedDpEvent(step, rounds))
    assert c >= 1
    return accountant.get_epsilon(plan.delta)


def test_central_dp_over_secagg_refuses_poisson_sampling(tmp_path):
    data = synthetic_interactions(n_users=30, n_items=20, per_user=5, seed=5)
    with (
        RoundLedger("synth", "test", _ledger(tmp_path)) as book,
        pytest.raises(ConfigError, match="--sampling fixed"),
    ):
        simulate(
            CONFIG, data, _settings(), run_dir=tmp_path / "r", spec=_spec(), ledger=book,
            secure=SecureAggregation(),
        )  # fmt: skip
    assert not (tmp_path / "r").exists()  # refused before any round


def test_central_dp_over_secagg_aborts_by_the_seed_alone_and_charges_every_released_round(
    tmp_path,
):
    # Two data sets of the same size with different histories, same seed and settings: the
    # rounds SecAgg+ aborts (30 % dropout of a fixed cohort of 20, min 15 survivors) are the
    # same, so the abort decision carries nothing about the data; each released round is
    # charged and the ledger's ε is dp_accounting's composition of the released rounds.
    settings = _settings(
        rounds=8, clients_per_round=20, min_clients=15, sampling="fixed", adaptive_clipping=False
    )
    patterns = []
    for seed in (5, 6):
        data = synthetic_interactions(n_users=40, n_items=20, per_user=5, seed=seed)
        url = _ledger(tmp_path / str(seed))
        reports = []
        with RoundLedger("synth", "test", url) as book:
            result = simulate(
                CONFIG, data, settings, run_dir=tmp_path / str(seed) / "run", spec=_spec(),
                ledger=book, secure=SecureAggregation(dropout=0.3), progress=reports.append,
            )  # fmt: skip
        released = [r.round for r in reports if r.released]
        patterns.append([r.released for r in reports])
        assert all(r.clients == 20 for r in reports)
        assert 0 < len(released) < len(reports)
        assert result.state.released_rounds == len(released)
        with Ledger(url) as ledger:
            spends = ledger.spends("synth")
            budget = ledger.budget("synth")
        committed = [s for s in spends if s.status.value == "committed"]
        assert len(committed) == 1 + len(released)  # the counts, then each released round
        plan = result.plan
        assert plan is not None and budget is not None and result.guarantee is not None
        assert budget.epsilon_spent == pytest.approx(plan.epsilon_after(len(released)), rel=1e-9)
        assert budget.epsilon_spent == pytest.approx(
            _direct_fixed_epsilon(plan, len(released)), rel=1e-9
        )
        assert result.guarantee.epsilon == pytest.approx(budget.epsilon_spent, rel=1e-9)
        assert "only the sum of each cohort" in result.guarantee.released
    assert patterns[0] == patterns[1]


def test_a_refused_device_of_a_private_round_sends_zero_and_stays_in_the_protocol():
    x = _updates(6, 8, 2)
    x[1, 0] = np.nan
    bound = float(np.linalg.norm(x[[0, 2, 3, 4, 5]], axis=1).max())
    private = SecAggAggregator(8, bound, SecureAggregation(), max_clients=6, min_survivors=6)
    ok = private.add(DenseUpdates(x))
    assert ok.tolist() == [True, False, True, True, True, True]
    total = private.finish()  # 6 inputs: the refused device's zero keeps the round at 6
    assert total.accepted == 6 and total.refused["non_finite"] == 1
    assert total.unclipped == 6
    zeroed = x.copy()
    zeroed[1] = 0.0
    np.testing.assert_allclose(total.total, zeroed.sum(axis=0), atol=8 / private.ring.scale)
    # a non-private round (no bound) leaves the refused device out
    plain = SecAggAggregator(8, None, SecureAggregation(), max_clients=6)
    plain.add(DenseUpdates(x))
    assert plain.finish().accepted == 5


def _both_ways(x, bound, settings, **kwargs):
    """The same round aggregated by the real SecAgg+ protocol and with the masks elided."""
    out = []
    for masks in (True, False):
        extra = {}
        if "mechanism" in kwargs:
            extra["noise_rng"] = np.random.default_rng(11)
        aggregator = SecAggAggregator(
            x.shape[1], bound, settings.model_copy(update={"masks": masks}), max_clients=len(x),
            round_index=2, seed=3, **kwargs, **extra,
        )  # fmt: skip
        aggregator.add(DenseUpdates(x))
        out.append((aggregator, aggregator.finish()))
    return out


def test_elided_masks_release_exactly_the_sum_the_protocol_unmasks():
    x = _updates(40, 24, 3)
    x[5, 0] = np.inf  # refused: a private round sends zero for it, a plain round leaves it out
    for bound in (None, float(np.linalg.norm(np.nan_to_num(x, posinf=0), axis=1).max())):
        (real, protocol), (elided, direct) = _both_ways(
            x, bound, SecureAggregation(value_range=1.0, dropout=0.3), min_survivors=5
        )
        assert real.last_round is not None and real.last_round.result.recovered  # dropouts
        assert elided.last_round is None  # no protocol was run
        np.testing.assert_array_equal(direct.total, protocol.total)
        assert (direct.accepted, direct.unclipped) == (protocol.accepted, protocol.unclipped)
        assert direct.refused == protocol.refused


def test_elided_masks_under_distributed_dp_without_noise_equal_the_protocol():
    x = _updates(30, 64, 8)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[[2, 7]] *= 1.5  # above the bound: refused, zero sent
    (_, protocol), (_, direct) = _both_ways(
        x, 1.0, SecureAggregation(dropout=0.2), min_survivors=10, mechanism=_ddg(noise=0.0)
    )
    np.testing.assert_array_equal(direct.total, protocol.total)
    assert direct.accepted == protocol.accepted and direct.refused == protocol.refused
    assert direct.refused["over_bound"] == 2 and "dropped" in direct.refused


def test_elided_masks_abort_below_min_survivors_like_the_protocol():
    from privrank.privacy.crypto.secagg import SecAggAbort

    x = _updates(12, 8, 4)
    for masks in (True, False):
        aggregator = SecAggAggregator(
            8, None, SecureAggregation(value_range=1.0, dropout=0.5, masks=masks),
            max_clients=12, seed=1, min_survivors=11,
        )  # fmt: skip
        aggregator.add(DenseUpdates(x))
        with pytest.raises(SecAggAbort, match="min_survivors"):
            aggregator.finish()
