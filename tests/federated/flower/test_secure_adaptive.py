"""Adaptive clipping under distributed DP on the Flower path (in-process nodes): the devices'
noised clipping bit rides in the SecAgg+ input, and the deployment adapts C as the simulator."""

from __future__ import annotations

import numpy as np
import pytest
from tests.federated.flower.test_deployment_rounds import CONFIG, _job
from tests.federated.flower.test_secure_deployment import SecureTransport

from privrank.federated import FederatedSettings, simulate
from privrank.federated.flower.devices import device_updates, partition
from privrank.federated.flower.rounds import run_deployment
from privrank.federated.flower.secure import SecureRequest, SecureTask, secure_sum
from privrank.federated.secure_aggregation import SecureAggregation
from privrank.models._fedmf_rounds import FedMFServer
from privrank.privacy.crypto.secagg import SecAggConfig
from privrank.privacy.distributed_dp_plan import plan_distributed_dp
from privrank.privacy.dp_fedavg import AdaptiveClipping
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.spend import RoundLedger

pytest.importorskip("cryptography")


@pytest.fixture
def train():
    from privrank.testing import synthetic_interactions

    return synthetic_interactions(n_users=40, n_items=25, per_user=6, seed=5)


def _plan(train, dim, noise=1.0):
    spec = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5)
    with _noise_scale_for_testing(noise):
        return plan_distributed_dp(
            spec.resolve(train.n_users), population=train.n_users, n_items=train.n_items,
            dimension=dim, rounds=2, min_clients=10, max_clients=train.n_users,
            modulus_bits=48, adaptive=AdaptiveClipping(), expected_cohort=40,
        )  # fmt: skip


def test_without_noise_the_bit_coordinate_counts_the_unclipped_devices(train, tmp_path):
    partition(train, 4, tmp_path / "devices")
    transport = SecureTransport(tmp_path / "devices", 4)
    factors = FedMFServer.initial_factors(CONFIG, train.n_items, 0)
    assignment = {k: node.device_ids[:5] for k, node in transport.nodes.items()}
    dim = train.n_items * 4 + 16
    plan = _plan(train, dim, noise=0.0)
    bound = 1.0  # C_t ≠ C_0 = 0.5; the norms here are 0.49 to 1.65: some are clipped
    config = SecAggConfig(modulus_bits=48, min_survivors=10, round_id=3)
    task = SecureTask.distributed(
        "round", plan.rounds, config, bound=bound, bits=plan.bits, config=CONFIG,
        item_factors=factors, noise_seed=9,
    )  # fmt: skip
    with _noise_scale_for_testing(0.0):  # the devices build their mechanisms inside
        total, survivors = secure_sum(transport.secure, assignment, task, dim, 3, 11)
    assert len(survivors) == 20
    unclipped, clipped_sum = 0, np.zeros(dim)
    for k, devices in assignment.items():  # the oracle: each device's own update and norm
        vectors, _ = device_updates(transport.nodes[k], devices, CONFIG, factors, None)
        norms = np.linalg.norm(vectors, axis=1)
        unclipped += int((norms <= bound).sum())
        clipped_sum += (vectors * np.minimum(1.0, bound / norms)[:, None]).sum(axis=0)
    assert 0 < unclipped < 20
    assert total.noisy_unclipped == float(unclipped)
    assert np.abs(total.total - clipped_sum).max() <= 20 * (bound / 0.5) / plan.rounds.scale


def test_the_task_crosses_the_flower_codec_with_its_bit_mechanism(train):
    pytest.importorskip("flwr")  # the Flower environment (make test-flower)
    from privrank.federated.flower.messages import parse_secure_request, secure_request

    plan = _plan(train, 8)
    config = SecAggConfig(modulus_bits=48, min_survivors=10, round_id=3)
    task = SecureTask.distributed(
        "round", plan.rounds, config, bound=0.3, bits=plan.bits, config=CONFIG,
        item_factors=np.zeros((train.n_items, 4)),
    )  # fmt: skip
    parsed = parse_secure_request(
        secure_request(SecureRequest("setup", 3, np.arange(1), [b""], task))
    ).task
    assert parsed is not None and parsed.bit_noise == task.bit_noise and parsed.bound == 0.3
    assert parsed.unit == pytest.approx(0.3 / 0.5)
    bits = parsed.bit_mechanism()
    assert bits is not None and bits.scale == plan.bits.scale and bits.sigma == plan.bits.sigma


def _adaptive_job(train, tmp_path, url, key):
    settings = FederatedSettings(rounds=3, clients_per_round=30, seed=2, min_clients=10)
    assert settings.adaptive_clipping
    privacy = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5,
                          noise_seed=11)  # fmt: skip
    job = _job(train, tmp_path / key, settings, privacy, ledger_key=key, ledger_url=url,
               secure=SecureAggregation(), distributed_dp=True)  # fmt: skip
    return job, settings, privacy


def test_the_deployment_adapts_and_charges_like_the_simulator(train, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("a", 50.0, 0.5)
        book.set_budget("b", 50.0, 0.5)
    partition(train, 4, tmp_path / "devices")
    job, settings, privacy = _adaptive_job(train, tmp_path, url, "a")
    reports: list = []
    with _noise_scale_for_testing(0.0):  # no noise: the clipping norms are deterministic
        result = run_deployment(job, SecureTransport(tmp_path / "devices", 4),
                                progress=reports.append)  # fmt: skip
        sim_reports: list = []
        with RoundLedger("b", "reference", url) as ledger:
            reference = simulate(
                CONFIG, train, settings, run_dir=tmp_path / "sim", spec=privacy, ledger=ledger,
                secure=SecureAggregation(), distributed_dp=True, progress=sim_reports.append,
            )  # fmt: skip
    assert result.distributed_plan is not None and result.distributed_plan.bits is not None
    assert result.state.released_rounds == reference.state.released_rounds == 3
    norms = [r.clipping_norm for r in reports]
    assert norms[0] == 0.5 and len(set(norms)) == 3  # C moved each round
    np.testing.assert_allclose(norms, [r.clipping_norm for r in sim_reports], rtol=1e-12)
    assert result.state.clipping_norm == pytest.approx(reference.state.clipping_norm, rel=1e-12)
    assert result.guarantee.epsilon == pytest.approx(reference.guarantee.epsilon, rel=1e-12)
    with Ledger(url) as book:
        ours = [(s.epsilon, s.delta) for s in book.spends("a", status="committed")]
        theirs = [(s.epsilon, s.delta) for s in book.spends("b", status="committed")]
    assert len(ours) == 4
    assert np.asarray(ours) == pytest.approx(np.asarray(theirs), rel=1e-12)
    assert "clipping bit" in result.guarantee.accounting
