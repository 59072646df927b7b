"""The wire format between the fedmf ServerApp and ClientApp: Flower ``RecordDict`` contents.

Three exchanges, each a Flower message type with an action (``ClientApp`` routes on it):

- ``query.enrol``: server → node, empty; node → server ``ArrayRecord {"devices"}`` (its
  devices' enrolment numbers).
- ``query.counts``: server → node ``ConfigRecord {"bound"}`` (``-1``: no bound); node → server
  ``ArrayRecord {"devices", "vectors"}`` (each device's 0/1 item vector).
- ``train.round``: server → node ``ArrayRecord {"item_factors"}`` (:math:`H`) and
  ``ConfigRecord {"round", "devices", "bound", "fedmf"}`` (the round, the node's cohort
  devices, the clipping bound or ``-1``, the objective's hyper-parameters as JSON); node →
  server ``ArrayRecord {"devices", "vectors", "unclipped"}``.

Nothing else leaves a device: no user factor, no history, no loss.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from privrank.errors import ConfigError
from privrank.federated.flower.rounds import NodeAnswer
from privrank.models._fedmf_rounds import FedMFConfig

__all__ = [
    "COUNTS",
    "ENROL",
    "ROUND",
    "RoundRequest",
    "answer_of",
    "counts_request",
    "parse_counts_request",
    "parse_round_request",
    "reply",
    "round_request",
]

ENROL = "query.enrol"
COUNTS = "query.counts"
ROUND = "train.round"


def _array(values: np.ndarray) -> Array:
    return Array.from_numpy_ndarray(np.ascontiguousarray(values))


def reply(
    devices: np.ndarray, vectors: np.ndarray | None = None, unclipped: np.ndarray | None = None
) -> RecordDict:
    """A node's answer."""
    arrays = {"devices": _array(np.asarray(devices, dtype=np.int64))}
    if vectors is not None:
        arrays["vectors"] = _array(np.asarray(vectors, dtype=np.float64))
    if unclipped is not None:
        arrays["unclipped"] = _array(np.asarray(unclipped, dtype=np.bool_))
    return RecordDict({"answer": ArrayRecord(arrays)})


def answer_of(content: RecordDict) -> NodeAnswer:
    """Read a node's answer (a malformed one raises ``ConfigError``; the caller refuses it)."""
    try:
        record = content["answer"]
        devices = record["devices"].numpy().astype(np.int64).ravel()
        vectors = record["vectors"].numpy() if "vectors" in record else np.zeros((len(devices), 0))
        unclipped = (
            record["unclipped"].numpy().astype(bool).ravel()
            if "unclipped" in record
            else np.ones(len(devices), dtype=bool)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"a SuperNode sent a malformed answer: {exc}") from exc
    if len(unclipped) != len(devices):
        raise ConfigError("a SuperNode sent clipping bits that do not match its devices")
    return NodeAnswer(devices, np.asarray(vectors), unclipped)


def counts_request(bound: int | None) -> RecordDict:
    """The server's request for the item counts."""
    return RecordDict({"config": ConfigRecord({"bound": -1 if bound is None else int(bound)})})


def parse_counts_request(content: RecordDict) -> int | None:
    """The bound of a counts request (``None``: no bound)."""
    bound = int(content["config"]["bound"])
    return None if bound < 0 else bound


class RoundRequest:
    """A ``train.round`` message's content, read.

    Attributes:
        round_index: The round.
        devices: The node's cohort devices.
        bound: The clipping bound (``None``: none).
        config: The objective's hyper-parameters.
        item_factors: :math:`H`.
    """

    def __init__(
        self,
        round_index: int,
        devices: np.ndarray,
        bound: float | None,
        config: FedMFConfig,
        item_factors: np.ndarray,
    ) -> None:
        self.round_index = round_index
        self.devices = devices
        self.bound = bound
        self.config = config
        self.item_factors = item_factors


def round_request(
    round_index: int,
    devices: np.ndarray,
    bound: float | None,
    config: FedMFConfig,
    item_factors: np.ndarray,
) -> RecordDict:
    """The server's ``train.round`` content for one node."""
    return RecordDict(
        {
            "model": ArrayRecord({"item_factors": _array(np.asarray(item_factors, np.float32))}),
            "config": ConfigRecord(
                {
                    "round": int(round_index),
                    "devices": [int(x) for x in devices],
                    "bound": -1.0 if bound is None else float(bound),
                    "fedmf": config.model_dump_json(),
                }
            ),
        }
    )


def parse_round_request(content: RecordDict) -> RoundRequest:
    """Read a ``train.round`` content."""
    config = content["config"]
    bound = float(config["bound"])
    return RoundRequest(
        int(config["round"]),
        np.asarray(config["devices"], dtype=np.int64),
        None if bound < 0 else bound,
        FedMFConfig.model_validate_json(str(config["fedmf"])),
        content["model"]["item_factors"].numpy(),
    )
