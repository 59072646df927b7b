"""Run in the Flower environment by ``test_flower_secagg.py``: SecAgg+ rounds whose every stage
goes through the ServerApp's and ClientApp's Flower codec (``RecordDict`` → protobuf → bytes →
``RecordDict``) and the ClientApp's handler with a ``RecordDict`` node state, against the
in-process deployment, with central DP over SecAgg+ and with distributed DP. Prints ``OK`` and
exits 0 when the runs agree exactly."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from privrank.data.fingerprint import fingerprint
from privrank.federated import FederatedSettings
from privrank.federated.flower import messages
from privrank.federated.flower.client_app import secure_stage
from privrank.federated.flower.devices import load_node, partition
from privrank.federated.flower.job import FlowerJob
from privrank.federated.flower.rounds import run_deployment
from privrank.federated.flower.secure import device_stage
from privrank.federated.secure_aggregation import SecureAggregation
from privrank.models import FedMFConfig
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions


class SecureTransport:
    """Each node's devices answered in-process through :func:`device_stage` (no codec)."""

    def __init__(self, folder: Path, nodes: int) -> None:
        self.nodes = {k: load_node(folder / f"node-{k}.npz") for k in range(nodes)}
        self.state: dict[int, dict[str, bytes]] = {k: {} for k in self.nodes}

    def enrol(self):
        return {k: node.device_ids for k, node in self.nodes.items()}

    def secure(self, stage, requests):
        return [
            (node, device_stage(self.nodes[node], self.state[node], request))
            for node, request in requests.items()
        ]


def _job(train, folder: Path, settings, privacy, **extra) -> FlowerJob:
    return FlowerJob(
        model=FedMFConfig(factors=4, regularization=0.05, unobserved_weight=0.1),
        settings=settings,
        privacy=privacy,
        population=train.n_users,
        n_items=train.n_items,
        data_fingerprint=fingerprint(train),
        run_dir=str(folder / "run"),
        **extra,
    )


def _wire(content: RecordDict) -> RecordDict:
    raw = recorddict_to_proto(content).SerializeToString()
    proto = ProtoRecordDict()
    proto.ParseFromString(raw)
    return recorddict_from_proto(proto)


class WireTransport(SecureTransport):
    def __init__(self, folder, nodes):
        super().__init__(folder, nodes)
        self.records = {k: RecordDict() for k in self.nodes}

    def secure(self, stage, requests):
        replies = []
        for node, request in requests.items():
            content = _wire(messages.secure_request(request))
            answer = _wire(secure_stage(self.nodes[node], self.records[node], content))
            replies.append((node, messages.parse_secure_reply(answer)))
        return replies


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    train = synthetic_interactions(n_users=40, n_items=25, per_user=6, seed=5)
    partition(train, 4, tmp / "devices")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    with Ledger(url) as book:
        book.set_budget("a", 50.0, 0.5)
        book.set_budget("b", 50.0, 0.5)
    settings = FederatedSettings(rounds=2, clients_per_round=40, seed=2, sampling="fixed")
    privacy = PrivacySpec(epsilon=30.0, max_interactions_per_user=5, clipping_norm=0.5,
                          noise_seed=11)  # fmt: skip
    secure = SecureAggregation()
    wire = run_deployment(
        _job(train, tmp / "w", settings, privacy, ledger_key="a", ledger_url=url, secure=secure),
        WireTransport(tmp / "devices", 4),
    )
    local = run_deployment(
        _job(train, tmp / "l", settings, privacy, ledger_key="b", ledger_url=url, secure=secure),
        SecureTransport(tmp / "devices", 4),
    )
    assert wire.state.released_rounds == 2
    np.testing.assert_array_equal(
        wire.state.arrays["item_counts"], local.state.arrays["item_counts"]
    )
    np.testing.assert_array_equal(
        wire.state.arrays["item_factors"], local.state.arrays["item_factors"]
    )
    # Distributed DP: the devices' noise shares (seeded per device for the test) through the
    # codec too; the same released sums, hence the same model, and the same charges.
    with Ledger(url) as book:
        book.set_budget("c", 50.0, 0.5)
        book.set_budget("d", 50.0, 0.5)
    settings = FederatedSettings(rounds=2, clients_per_round=30, seed=2, min_clients=10,
                                 adaptive_clipping=False)  # fmt: skip
    privacy = PrivacySpec(epsilon=8.0, max_interactions_per_user=5, clipping_norm=0.5,
                          noise_seed=11)  # fmt: skip
    extra = {"ledger_url": url, "secure": secure, "distributed_dp": True}
    wire = run_deployment(
        _job(train, tmp / "dw", settings, privacy, ledger_key="c", **extra),
        WireTransport(tmp / "devices", 4),
    )
    local = run_deployment(
        _job(train, tmp / "dl", settings, privacy, ledger_key="d", **extra),
        SecureTransport(tmp / "devices", 4),
    )
    assert wire.state.released_rounds == 2 and wire.guarantee is not None
    for name in ("item_counts", "item_factors"):
        np.testing.assert_array_equal(wire.state.arrays[name], local.state.arrays[name])
    with Ledger(url) as book:
        ours = [(s.epsilon, s.delta) for s in book.spends("c", status="committed")]
        theirs = [(s.epsilon, s.delta) for s in book.spends("d", status="committed")]
    assert len(ours) == 3 and ours == theirs
    print("OK")


if __name__ == "__main__":
    main()
