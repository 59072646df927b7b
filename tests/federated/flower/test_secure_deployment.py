"""SecAgg+ on the deployment path (no Flower processes): the stages of
:mod:`privrank.federated.flower.secure` driven over an in-process transport, checked against the
plaintext sums and against the simulator's SecAgg+ path on the same data, seed and settings;
under distributed DP, against the sum of the devices' noisy encodings recomputed by the test and
the simulator's ledger charges."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from tests.federated.flower.test_deployment_rounds import CONFIG, LocalTransport, _job

from privrank.errors import ConfigError
from privrank.federated import FederatedSettings, simulate
from privrank.federated.flower.devices import device_updates, partition
from privrank.federated.flower.model import assemble_model
from privrank.federated.flower.rounds import run_deployment
from privrank.federated.flower.secure import (
    SecureRequest,
    SecureTask,
    device_stage,
    secure_sum,
)
from privrank.federated.secure_aggregation import SecureAggregation
from privrank.models._fedmf_rounds import FedMFServer
from privrank.privacy.crypto.secagg import MaskedInput, SecAggAbort, SecAggConfig
from privrank.privacy.distributed_dp import clip_l2
from privrank.privacy.distributed_dp_plan import plan_distributed_dp
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.spend import RoundLedger


class SecureTransport(LocalTransport):
    """The in-process transport with the SecAgg+ stages; each node keeps its own state.
    ``drop_stage`` maps a stage to nodes that stop answering from it on (in every exchange);
    every masked input the server receives is kept in ``masked``."""

    def __init__(self, folder, nodes: int, drop_stage: Mapping[str, set[int]] | None = None):
        super().__init__(folder, nodes)
        self.state: dict[int, dict[str, bytes]] = {k: {} for k in self.nodes}
        self.drop_stage = drop_stage or {}
        self.masked: list[tuple[int, MaskedInput]] = []
        self.bits = 48

    def updates(self, round_index, assignment, item_factors, bound, config):  # pragma: no cover
        raise AssertionError("a secure run never asks for plain updates")

    def counts(self, bound):  # pragma: no cover
        raise AssertionError("a secure run never asks for plain counts")

    def secure(self, stage: str, requests: Mapping[int, SecureRequest]):
        order = ("setup", "share", "mask", "unmask")
        gone = set()
        for name in order[: order.index(stage) + 1]:
            gone |= self.drop_stage.get(name, set())
        replies = []
        for node, request in requests.items():
            if node in gone:
                continue
            if request.task is not None:
                self.bits = request.task.secagg.modulus_bits
            reply = device_stage(self.nodes[node], self.state[node], request)
            if stage == "mask":
                for device, raw in zip(reply.devices.tolist(), reply.messages, strict=True):
                    self.masked.append((device, MaskedInput.from_bytes(raw, self.bits)))
            replies.append((node, reply))
        return replies


@pytest.fixture
def train():
    from privrank.testing import synthetic_interactions

    return synthetic_interactions(n_users=40, n_items=25, per_user=6, seed=5)


def _round_task(bound, secure: SecureAggregation, cohort: int, factors, round_id=3, survivors=1):
    ring = secure.ring(cohort, bound)
    config = SecAggConfig(modulus_bits=secure.modulus_bits, min_survivors=survivors,
                          round_id=round_id)  # fmt: skip
    return SecureTask("round", bound, ring.modulus_bits, ring.clip, ring.scale, config,
                      config=CONFIG, item_factors=factors), ring  # fmt: skip


def test_the_unmasked_sum_is_the_plain_sum_and_no_masked_upload_is_an_update(train, tmp_path):
    partition(train, 4, tmp_path / "devices")
    transport = SecureTransport(tmp_path / "devices", 4)
    factors = FedMFServer.initial_factors(CONFIG, train.n_items, 0)
    assignment = {k: node.device_ids[:5] for k, node in transport.nodes.items()}
    secure = SecureAggregation()
    task, ring = _round_task(0.5, secure, 20, factors)
    dim = train.n_items * 4 + 16
    total, survivors = secure_sum(transport.secure, assignment, task, dim, 3, 11)
    assert len(survivors) == 20 and total.accepted == 20
    # The oracle: each device's clipped update quantised by the same ring, summed in int64.
    expected = np.zeros(dim + 1, dtype=np.int64)
    encodings = {}
    for k, devices in assignment.items():
        vectors, bits = device_updates(transport.nodes[k], devices, CONFIG, factors, 0.5)
        rows = np.column_stack([vectors, bits * 0.5])
        for device, row in zip(devices.tolist(), rows, strict=True):
            encodings[device] = ring.encode(row)
            expected += ring.quantise(row)
        assert total.unclipped >= 0
    np.testing.assert_array_equal(total.total, expected[:dim] / ring.scale)
    assert total.unclipped == pytest.approx(expected[dim] / ring.scale / 0.5)
    # What the server saw of each device: a masked vector, never its encoding; its high bits
    # are uniform (mean of a uniform on [0, 1) over |x| = 117 coordinates × 20 devices).
    assert len(transport.masked) == 20
    uniform = []
    for device, message in transport.masked:
        assert not np.array_equal(message.vector, encodings[device])
        uniform.append(message.vector.astype(np.float64) / 2.0**48)
    values = np.concatenate(uniform)
    assert abs(values.mean() - 0.5) < 4 * np.sqrt(1 / 12 / len(values))
    # Nothing of a device's state is left on its node after the exchange.
    assert all(not state for state in transport.state.values())


def test_a_node_that_drops_after_sharing_is_recovered_and_left_out(train, tmp_path):
    partition(train, 4, tmp_path / "devices")
    transport = SecureTransport(tmp_path / "devices", 4, drop_stage={"mask": {2}})
    factors = FedMFServer.initial_factors(CONFIG, train.n_items, 0)
    assignment = {k: node.device_ids[:5] for k, node in transport.nodes.items()}
    task, ring = _round_task(None, SecureAggregation(), 20, factors)
    dim = train.n_items * 4 + 16
    total, survivors = secure_sum(transport.secure, assignment, task, dim, 3, 5)
    assert sorted(survivors.tolist()) == sorted(
        np.concatenate([assignment[k] for k in (0, 1, 3)]).tolist()
    )
    assert total.refused["dropped"] == 5
    expected = np.zeros(dim + 1, dtype=np.int64)
    for k in (0, 1, 3):
        vectors, bits = device_updates(transport.nodes[k], assignment[k], CONFIG, factors, None)
        for row in np.column_stack([vectors, bits * 1.0]):
            expected += ring.quantise(row)
    np.testing.assert_array_equal(total.total, expected[:dim] / ring.scale)


def test_fewer_survivors_than_the_floor_abort(train, tmp_path):
    partition(train, 4, tmp_path / "devices")
    transport = SecureTransport(tmp_path / "devices", 4, drop_stage={"mask": {0, 1, 2}})
    factors = FedMFServer.initial_factors(CONFIG, train.n_items, 0)
    assignment = {k: node.device_ids[:5] for k, node in transport.nodes.items()}
    task, _ = _round_task(None, SecureAggregation(), 20, factors, survivors=10)
    with pytest.raises(SecAggAbort):
        secure_sum(transport.secure, assignment, task, train.n_items * 4 + 16, 3, 5)


def test_the_secure_deployment_equals_the_secure_simulator(train, tmp_path):
    settings = FederatedSettings(rounds=3, clients_per_round=10, seed=3)
    secure = SecureAggregation()
    partition(train, 5, tmp_path / "devices")
    transport = SecureTransport(tmp_path / "devices", 5)
    result = run_deployment(_job(train, tmp_path, settings, secure=secure), transport)
    reference = simulate(CONFIG, train, settings, run_dir=tmp_path / "sim", secure=secure)
    np.testing.assert_array_equal(
        result.state.arrays["item_counts"], reference.state.arrays["item_counts"]
    )
    np.testing.assert_allclose(
        result.state.arrays["item_factors"],
        reference.state.arrays["item_factors"],
        rtol=1e-5,
        atol=1e-6,
    )
    assert result.state.released_rounds == 3


def test_the_private_secure_deployment_charges_the_ledger_like_the_simulator(train, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("a", 50.0, 0.5)
        book.set_budget("b", 50.0, 0.5)
    settings = FederatedSettings(rounds=3, clients_per_round=40, seed=2, sampling="fixed")
    privacy = PrivacySpec(epsilon=30.0, max_interactions_per_user=5, clipping_norm=0.5,
                          noise_seed=11)  # fmt: skip
    secure = SecureAggregation()
    partition(train, 4, tmp_path / "devices")
    job = _job(train, tmp_path, settings, privacy, ledger_key="a", ledger_url=url, secure=secure)
    result = run_deployment(job, SecureTransport(tmp_path / "devices", 4))
    with RoundLedger("b", "reference", url) as ledger:
        reference = simulate(CONFIG, train, settings, run_dir=tmp_path / "sim", spec=privacy,
                             ledger=ledger, secure=secure)  # fmt: skip
    np.testing.assert_allclose(
        result.state.arrays["item_factors"],
        reference.state.arrays["item_factors"],
        rtol=1e-5,
        atol=1e-6,
    )
    assert result.state.clipping_norm == pytest.approx(reference.state.clipping_norm)
    assert result.guarantee.epsilon == pytest.approx(reference.guarantee.epsilon, rel=1e-12)
    with Ledger(url) as book:
        ours = [(s.epsilon, s.delta) for s in book.spends("a", status="committed")]
        theirs = [(s.epsilon, s.delta) for s in book.spends("b", status="committed")]
    assert len(ours) == 4 and ours[0][1] > 0  # the counts (with δ) and three rounds
    assert np.asarray(ours) == pytest.approx(np.asarray(theirs), rel=1e-12)
    # The model assembled from the run's state states the same guarantee (fixed cohorts).
    assembled = assemble_model(job, train)
    assert assembled.guarantee.epsilon == pytest.approx(result.guarantee.epsilon, rel=1e-12)


def test_an_aborted_private_round_is_neither_released_nor_charged(train, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("a", 50.0, 0.5)
    settings = FederatedSettings(rounds=2, clients_per_round=40, seed=2, sampling="fixed",
                                 min_clients=20, adaptive_clipping=False)  # fmt: skip
    privacy = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5)
    partition(train, 4, tmp_path / "devices")

    class DropRoundTwo(SecureTransport):
        def secure(self, stage, requests):
            if stage == "mask" and any(r.round_index == 2 for r in requests.values()):
                requests = {k: r for k, r in requests.items() if k == 0}
            return super().secure(stage, requests)

    job = _job(train, tmp_path, settings, privacy, ledger_key="a", ledger_url=url,
               secure=SecureAggregation())  # fmt: skip
    result = run_deployment(job, DropRoundTwo(tmp_path / "devices", 4))
    assert result.state.round == 2 and result.state.released_rounds == 1
    with Ledger(url) as book:
        spent = book.budget("a").epsilon_spent
    assert spent == pytest.approx(result.plan.epsilon_after(1), rel=1e-9)


def test_central_dp_over_secagg_refuses_poisson_cohorts(train, tmp_path):
    settings = FederatedSettings(rounds=2, clients_per_round=10, seed=0)
    privacy = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5)
    partition(train, 4, tmp_path / "devices")
    job = _job(train, tmp_path, settings, privacy, ledger_key="a", ledger_url="sqlite://",
               secure=SecureAggregation())  # fmt: skip
    with pytest.raises(ConfigError, match="needs --sampling fixed"):
        run_deployment(job, SecureTransport(tmp_path / "devices", 4))


def _ddp_job(train, tmp_path, url, key, **settings_extra):
    settings = FederatedSettings(rounds=2, clients_per_round=30, seed=2, min_clients=10,
                                 adaptive_clipping=False, **settings_extra)  # fmt: skip
    privacy = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5,
                          noise_seed=11)  # fmt: skip
    return _job(train, tmp_path / key, settings, privacy, ledger_key=key, ledger_url=url,
                secure=SecureAggregation(), distributed_dp=True), settings, privacy  # fmt: skip


def test_a_distributed_dp_sum_is_exactly_the_sum_of_the_devices_noisy_encodings(train, tmp_path):
    partition(train, 4, tmp_path / "devices")
    transport = SecureTransport(tmp_path / "devices", 4)
    factors = FedMFServer.initial_factors(CONFIG, train.n_items, 0)
    assignment = {k: node.device_ids[:5] for k, node in transport.nodes.items()}
    dim = train.n_items * 4 + 16
    spec = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5)
    plan = plan_distributed_dp(
        spec.resolve(train.n_users), population=train.n_users, n_items=train.n_items,
        dimension=dim, rounds=2, min_clients=10, max_clients=train.n_users, modulus_bits=48,
    )  # fmt: skip
    mechanism = plan.rounds
    config = SecAggConfig(modulus_bits=48, min_survivors=10, round_id=3)
    task = SecureTask.distributed("round", mechanism, config, config=CONFIG,
                                  item_factors=factors, noise_seed=9)  # fmt: skip
    total, survivors = secure_sum(transport.secure, assignment, task, dim, 3, 11)
    assert len(survivors) == 20 and total.accepted == 20 and total.unclipped == 0
    # The oracle: each device's update clipped, rounded and noised by the mechanism with that
    # device's own generator, summed in Z_2^48, decoded.
    modulus = np.uint64((1 << 48) - 1)
    expected = np.zeros(dim, dtype=np.uint64)
    rounded = np.zeros(dim, dtype=np.int64)
    encodings = {}
    for k, devices in assignment.items():
        vectors, _ = device_updates(transport.nodes[k], devices, CONFIG, factors, 0.5)
        clipped, _ = clip_l2(vectors, 0.5)
        for device, row in zip(devices.tolist(), clipped, strict=True):
            own = np.random.default_rng([9, 3, device])
            encoded, refused = mechanism.encode_batch(row[None], own)
            assert not len(refused)
            encodings[device] = encoded[0]
            expected = (expected + encoded[0]) & modulus
            integers, _ = mechanism.round_batch(row[None], np.random.default_rng([9, 3, device]))
            rounded += integers[0]
    np.testing.assert_array_equal(total.total, mechanism.decode(expected))
    # The sum carries the devices' noise: its deviation from the rounded sum has the variance
    # of 20 shares (a 5-sigma band on the sample variance over |x| coordinates).
    noise = total.total * mechanism.scale - rounded
    variance = 20 * mechanism.sigma**2
    assert abs(noise.var() / variance - 1) < 5 * np.sqrt(2 / dim)
    # No masked upload is a device's noisy encoding.
    for device, message in transport.masked:
        assert not np.array_equal(message.vector, encodings[device])
    assert all(not state for state in transport.state.values())


def test_the_distributed_dp_deployment_charges_the_ledger_like_the_simulator(train, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("a", 50.0, 0.5)
        book.set_budget("b", 50.0, 0.5)
    partition(train, 4, tmp_path / "devices")
    job, settings, privacy = _ddp_job(train, tmp_path, url, "a")
    result = run_deployment(job, SecureTransport(tmp_path / "devices", 4))
    with RoundLedger("b", "reference", url) as ledger:
        reference = simulate(
            CONFIG, train, settings, run_dir=tmp_path / "sim", spec=privacy, ledger=ledger,
            secure=SecureAggregation(), distributed_dp=True,
        )  # fmt: skip
    assert result.plan is None and result.distributed_plan is not None
    assert result.state.released_rounds == reference.state.released_rounds == 2
    assert result.guarantee.epsilon == pytest.approx(reference.guarantee.epsilon, rel=1e-12)
    assert result.guarantee.epsilon <= 8.0 * (1 + 1e-9)
    assert result.guarantee.mechanism == "distributed-discrete-gaussian+secagg"
    with Ledger(url) as book:
        ours = [(s.epsilon, s.delta) for s in book.spends("a", status="committed")]
        theirs = [(s.epsilon, s.delta) for s in book.spends("b", status="committed")]
    assert len(ours) == 3 and ours[0][1] > 0  # the counts (with δ) and two rounds
    assert np.asarray(ours) == pytest.approx(np.asarray(theirs), rel=1e-12)
    assembled = assemble_model(job, train)
    assert assembled.plan is None
    assert assembled.guarantee.epsilon == pytest.approx(result.guarantee.epsilon, rel=1e-12)
    assert assembled.guarantee.mechanism == "distributed-discrete-gaussian+secagg"
    # The released counts: the noisy sum of round 0's cohort's bounded items, scaled to N.
    counts = result.state.arrays["item_counts"]
    assert counts.shape == (train.n_items,) and np.isfinite(counts).all()
    assert np.isfinite(result.state.arrays["item_factors"]).all()


def test_a_distributed_dp_round_without_enough_survivors_is_neither_released_nor_charged(
    train, tmp_path
):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("a", 50.0, 0.5)
    partition(train, 4, tmp_path / "devices")
    job, _, _ = _ddp_job(train, tmp_path, url, "a")

    class DropRoundTwo(SecureTransport):
        def secure(self, stage, requests):
            if stage == "mask" and any(r.round_index == 2 for r in requests.values()):
                requests = {k: r for k, r in requests.items() if k == 0}
            return super().secure(stage, requests)

    result = run_deployment(job, DropRoundTwo(tmp_path / "devices", 4))
    assert result.state.round == 2 and result.state.released_rounds == 1
    with Ledger(url) as book:
        spent = book.budget("a").epsilon_spent
    assert spent == pytest.approx(result.distributed_plan.epsilon_after(1), rel=1e-9)
    assert result.guarantee.epsilon == pytest.approx(spent, rel=1e-9)


def test_distributed_dp_needs_a_target_and_secure_aggregation(train, tmp_path):
    settings = FederatedSettings(rounds=2, clients_per_round=10, adaptive_clipping=False)
    with pytest.raises(ConfigError, match="distributed_dp needs"):
        _job(train, tmp_path, settings, None, secure=SecureAggregation(), distributed_dp=True)
    privacy = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5)
    # (adaptive clipping under distributed DP is no longer refused: test_secure_adaptive.py)
    with pytest.raises(ConfigError, match="Poisson"):
        _job(train, tmp_path, settings.model_copy(update={"sampling": "fixed"}), privacy,
             secure=SecureAggregation(), distributed_dp=True, secret_sampling=True)  # fmt: skip
