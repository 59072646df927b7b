"""The deployment's server rounds (no Flower): node files, device code, and the run over an
in-process transport, checked against the simulator on the same data, seed and settings."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from privrank.data.fingerprint import fingerprint
from privrank.errors import ConfigError, DataError
from privrank.federated import FederatedSettings, simulate
from privrank.federated.flower.devices import (
    device_counts,
    device_updates,
    load_node,
    partition,
)
from privrank.federated.flower.job import FlowerJob
from privrank.federated.flower.model import assemble_model
from privrank.federated.flower.rounds import NodeAnswer, run_deployment
from privrank.federated.simulator import _histories
from privrank.models import FedMFConfig
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger

CONFIG = FedMFConfig(factors=4, regularization=0.05, unobserved_weight=0.1)


class LocalTransport:
    """Every node file answered in-process; ``drop`` maps a round to nodes that do not answer."""

    def __init__(
        self, folder, nodes: int, drop: Mapping[int, set[int]] | None = None, config=CONFIG
    ) -> None:
        self.config = config
        self.nodes = {k: load_node(folder / f"node-{k}.npz") for k in range(nodes)}
        self.drop = drop or {}
        self.asked: list[dict[int, np.ndarray]] = []

    def enrol(self):
        return {k: node.device_ids for k, node in self.nodes.items()}

    def counts(self, bound):
        return [
            NodeAnswer(n.device_ids, device_counts(n, bound), np.ones(len(n.device_ids), bool))
            for n in self.nodes.values()
        ]

    def updates(self, round_index, assignment, item_factors, bound, config):
        self.asked.append(dict(assignment))
        answers = []
        for k, devices in assignment.items():
            if k in self.drop.get(round_index, set()):
                continue
            vectors, bits = device_updates(self.nodes[k], devices, config, item_factors, bound)
            answers.append(NodeAnswer(devices, vectors, bits))
        return answers


@pytest.fixture
def train():
    return synthetic_interactions(n_users=40, n_items=25, per_user=6, seed=5)


def _job(train, tmp_path, settings, privacy=None, **extra) -> FlowerJob:
    return FlowerJob(
        model=CONFIG,
        settings=settings,
        privacy=privacy,
        population=train.n_users,
        n_items=train.n_items,
        data_fingerprint=fingerprint(train),
        run_dir=str(tmp_path / "run"),
        **extra,
    )


def test_node_files_hold_exactly_each_devices_history(train, tmp_path):
    manifest = partition(train, 7, tmp_path)
    assert manifest["devices"] == 40 and manifest["nodes"] == 7
    histories = _histories(train)
    seen = []
    for k in range(7):
        node = load_node(tmp_path / f"node-{k}.npz")
        np.testing.assert_array_equal(node.device_ids, np.arange(k, 40, 7))
        assert (node.histories != histories[node.device_ids]).nnz == 0
        seen.extend(node.device_ids.tolist())
    assert sorted(seen) == list(range(40))


def test_a_bad_node_file_is_refused_with_its_name_and_field(train, tmp_path):
    partition(train, 2, tmp_path)
    path = tmp_path / "node-0.npz"
    with np.load(path) as data:
        arrays = dict(data)
    arrays["items"] = arrays["items"] + 1000
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"bad\.npz: 'items' must be codes in 0\.\.24"):
        load_node(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=r"missing\.npz: cannot read"):
        load_node(tmp_path / "missing.npz")
    node = load_node(path)
    with pytest.raises(ConfigError, match="does not hold"):
        node.rows_of(np.array([1]))


def test_the_deployment_equals_the_simulator_without_dropout(train, tmp_path):
    settings = FederatedSettings(rounds=4, clients_per_round=10, seed=3)
    partition(train, 6, tmp_path / "devices")
    transport = LocalTransport(tmp_path / "devices", 6)
    result = run_deployment(_job(train, tmp_path, settings), transport)
    reference = simulate(CONFIG, train, settings, run_dir=tmp_path / "sim")
    np.testing.assert_allclose(
        result.state.arrays["item_factors"],
        reference.state.arrays["item_factors"],
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        result.state.arrays["item_counts"], reference.state.arrays["item_counts"]
    )
    assert result.state.released_rounds == 4
    model = assemble_model(_job(train, tmp_path, settings), train).model
    np.testing.assert_allclose(model.item_factors_, reference.model.item_factors_, atol=1e-6)


def test_dropped_devices_leave_the_round_and_the_rest_is_summed(train, tmp_path):
    settings = FederatedSettings(rounds=2, clients_per_round=20, seed=1)
    partition(train, 5, tmp_path / "devices")
    transport = LocalTransport(tmp_path / "devices", 5, drop={2: {3}})
    result = run_deployment(_job(train, tmp_path, settings), transport)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    import json

    second = json.loads(lines[1])
    dropped = len(transport.asked[1].get(3, []))
    assert dropped > 0
    assert second["refused"]["dropped"] == dropped
    assert second["accepted"] == second["clients"] - dropped
    assert result.state.released_rounds == 2


def test_a_private_run_releases_and_charges_every_round_even_when_every_device_drops(
    train, tmp_path, monkeypatch
):
    monkeypatch.setenv("PRIVRANK_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("synthetic", 50.0, 0.5)
    settings = FederatedSettings(rounds=3, clients_per_round=10, seed=0)
    privacy = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=1.0, noise_seed=7)
    partition(train, 5, tmp_path / "devices")
    # Round 2: every node drops out. Skipping the round would tell, without noise, how many
    # sampled devices answered; it is released (noise only) and charged like the others.
    transport = LocalTransport(tmp_path / "devices", 5, drop={2: set(range(5))})
    job = _job(train, tmp_path, settings, privacy, ledger_key="synthetic", ledger_url=url)
    result = run_deployment(job, transport)
    assert result.state.round == 3 and result.state.released_rounds == 3
    assert result.guarantee is not None
    assert len(result.state.spend_ids) == 4  # the counts + 3 rounds, all committed
    with Ledger(url) as book:
        spent = book.budget("synthetic")
    assert spent.epsilon_spent == pytest.approx(result.plan.epsilon_after(3), rel=1e-9)


def test_a_private_run_refuses_min_clients_above_one(train, tmp_path):
    settings = FederatedSettings(rounds=3, clients_per_round=10, seed=0, min_clients=3)
    privacy = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=1.0)
    partition(train, 5, tmp_path / "devices")
    job = _job(train, tmp_path, settings, privacy, ledger_key="synthetic", ledger_url="sqlite://")
    with pytest.raises(ConfigError, match="min-clients 3"):
        run_deployment(job, LocalTransport(tmp_path / "devices", 5))


def test_the_private_deployment_equals_the_private_simulator(train, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("a", 50.0, 0.5)
        book.set_budget("b", 50.0, 0.5)
    settings = FederatedSettings(rounds=3, clients_per_round=10, seed=2)
    privacy = PrivacySpec(
        epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5, noise_seed=11
    )
    partition(train, 4, tmp_path / "devices")
    job = _job(train, tmp_path, settings, privacy, ledger_key="a", ledger_url=url)
    result = run_deployment(job, LocalTransport(tmp_path / "devices", 4))
    with RoundLedger("b", "reference", url) as ledger:
        reference = simulate(
            CONFIG, train, settings, run_dir=tmp_path / "sim", spec=privacy, ledger=ledger
        )
    np.testing.assert_allclose(
        result.state.arrays["item_factors"],
        reference.state.arrays["item_factors"],
        rtol=1e-5,
        atol=1e-6,
    )
    assert result.state.clipping_norm == pytest.approx(reference.state.clipping_norm)
    assert result.guarantee.epsilon == pytest.approx(reference.guarantee.epsilon)


class StoppingTransport(LocalTransport):
    """A server that goes down when asked for its ``stop_at``-th round of updates."""

    def __init__(self, folder, nodes: int, stop_at: int) -> None:
        super().__init__(folder, nodes)
        self.stop_at = stop_at

    def updates(self, round_index, assignment, item_factors, bound, config):
        if len(self.asked) + 1 == self.stop_at:
            raise RuntimeError("the server went down")
        return super().updates(round_index, assignment, item_factors, bound, config)


def test_a_deployment_resumes_only_when_asked_and_ends_as_an_uninterrupted_run(train, tmp_path):
    partition(train, 6, tmp_path / "devices")
    settings = FederatedSettings(rounds=4, clients_per_round=10, seed=3)
    whole = run_deployment(
        _job(train, tmp_path / "whole", settings), LocalTransport(tmp_path / "devices", 6)
    )
    with pytest.raises(ConfigError, match="holds no federated run state"):
        run_deployment(
            _job(train, tmp_path / "fresh", settings, resume=True),
            LocalTransport(tmp_path / "devices", 6),
        )
    with pytest.raises(RuntimeError, match="went down"):
        run_deployment(
            _job(train, tmp_path, settings), StoppingTransport(tmp_path / "devices", 6, 3)
        )
    with pytest.raises(ConfigError, match="pass --resume"):
        run_deployment(_job(train, tmp_path, settings), LocalTransport(tmp_path / "devices", 6))
    transport = LocalTransport(tmp_path / "devices", 6)
    resumed = run_deployment(_job(train, tmp_path, settings, resume=True), transport)
    assert resumed.state.round == 4 and len(transport.asked) == 2  # rounds 3 and 4 only
    np.testing.assert_array_equal(
        resumed.state.arrays["item_factors"], whole.state.arrays["item_factors"]
    )
