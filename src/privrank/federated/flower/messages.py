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
- ``train.secagg`` (SecAgg+, :mod:`privrank.federated.flower.secure`): server → node
  ``ConfigRecord {"stage", "round", "blob"}`` and ``ArrayRecord {"devices", "offsets"}`` (one
  protocol message per device, concatenated), at ``setup`` also ``ConfigRecord "task"`` and,
  for a round, ``ArrayRecord {"item_factors"}`` (under distributed DP the task also names the
  mechanism's settings, ``noise``, and a test noise seed or ``-1``); node → server the same
  framing of its devices' protocol messages (public keys, encrypted shares, masked inputs, shares).

Nothing else leaves a device: no user factor, no history, no loss; under SecAgg+ not even its
update, only its masked input.
"""

from __future__ import annotations

import itertools

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from privrank.errors import ConfigError
from privrank.federated.flower.devices import NodeAnswer
from privrank.federated.flower.secure import SecureReply, SecureRequest, SecureTask
from privrank.models._fedmf_rounds import FedMFConfig
from privrank.privacy.crypto.secagg import SecAggConfig
from privrank.privacy.distributed_dp import DistributedDPConfig

__all__ = [
    "COUNTS",
    "ENROL",
    "ROUND",
    "SECURE",
    "RoundRequest",
    "answer_of",
    "counts_request",
    "parse_counts_request",
    "parse_round_request",
    "parse_secure_reply",
    "parse_secure_request",
    "reply",
    "round_request",
    "secure_reply",
    "secure_request",
]

ENROL = "query.enrol"
COUNTS = "query.counts"
ROUND = "train.round"
SECURE = "train.secagg"


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


def _framed(devices: np.ndarray, blobs: list[bytes]) -> tuple[ArrayRecord, bytes]:
    offsets = np.cumsum([0, *[len(b) for b in blobs]]).astype(np.int64)
    arrays = ArrayRecord(
        {"devices": _array(np.asarray(devices, dtype=np.int64)), "offsets": _array(offsets)}
    )
    return arrays, b"".join(blobs)


def _unframed(arrays: ArrayRecord, blob: bytes) -> tuple[np.ndarray, list[bytes]]:
    devices = arrays["devices"].numpy().astype(np.int64).ravel()
    offsets = arrays["offsets"].numpy().astype(np.int64).ravel()
    if (
        len(offsets) != len(devices) + 1
        or offsets[0] != 0
        or offsets[-1] != len(blob)
        or np.any(np.diff(offsets) < 0)
    ):
        raise ValueError("the framing of the protocol messages does not match the devices")
    return devices, [blob[a:b] for a, b in itertools.pairwise(offsets.tolist())]


def secure_request(request: SecureRequest) -> RecordDict:
    """The server's ``train.secagg`` content for one node."""
    arrays, blob = _framed(request.devices, request.messages)
    content = {
        "frame": arrays,
        "config": ConfigRecord(
            {"stage": request.stage, "round": int(request.round_index), "blob": blob}
        ),
    }
    task = request.task
    if task is not None:
        content["task"] = ConfigRecord(
            {
                "kind": task.kind,
                "bound": -1.0 if task.bound is None else float(task.bound),
                "modulus_bits": int(task.modulus_bits),
                "value_range": float(task.value_range),
                "scale": float(task.scale),
                "secagg": task.secagg.model_dump_json(),
                "fedmf": "" if task.config is None else task.config.model_dump_json(),
                "count_bound": -1 if task.count_bound is None else int(task.count_bound),
                "noise": "" if task.noise is None else task.noise.model_dump_json(),
                "noise_seed": -1 if task.noise_seed is None else int(task.noise_seed),
                "bit_noise": "" if task.bit_noise is None else task.bit_noise.model_dump_json(),
            }
        )
        if task.item_factors is not None:
            content["model"] = ArrayRecord(
                {"item_factors": _array(np.asarray(task.item_factors, np.float32))}
            )
    return RecordDict(content)


def parse_secure_request(content: RecordDict) -> SecureRequest:
    """Read a ``train.secagg`` content."""
    config = content["config"]
    blob = config["blob"]
    devices, blobs = _unframed(content["frame"], blob if isinstance(blob, bytes) else b"")
    task = None
    if "task" in content:
        t = content["task"]
        bound = float(t["bound"])
        count_bound = int(t["count_bound"])
        noise_seed = int(t["noise_seed"]) if "noise_seed" in t else -1
        task = SecureTask(
            kind=str(t["kind"]),
            bound=None if bound < 0 else bound,
            modulus_bits=int(t["modulus_bits"]),
            value_range=float(t["value_range"]),
            scale=float(t["scale"]),
            secagg=SecAggConfig.model_validate_json(str(t["secagg"])),
            config=FedMFConfig.model_validate_json(str(t["fedmf"])) if t["fedmf"] else None,
            item_factors=content["model"]["item_factors"].numpy() if "model" in content else None,
            count_bound=None if count_bound < 0 else count_bound,
            noise=DistributedDPConfig.model_validate_json(str(t["noise"]))
            if t.get("noise")
            else None,
            noise_seed=None if noise_seed < 0 else noise_seed,
            bit_noise=DistributedDPConfig.model_validate_json(str(t["bit_noise"]))
            if t.get("bit_noise")
            else None,
        )
    return SecureRequest(str(config["stage"]), int(config["round"]), devices, blobs, task)


def secure_reply(reply_: SecureReply) -> RecordDict:
    """A node's answer to one stage."""
    arrays, blob = _framed(reply_.devices, reply_.messages)
    return RecordDict({"frame": arrays, "config": ConfigRecord({"blob": blob})})


def parse_secure_reply(content: RecordDict) -> SecureReply:
    """Read a node's answer to one stage (a malformed one raises ``ConfigError``)."""
    try:
        blob = content["config"]["blob"]
        devices, blobs = _unframed(content["frame"], blob if isinstance(blob, bytes) else b"")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"a SuperNode sent a malformed SecAgg+ answer: {exc}") from exc
    return SecureReply(devices, blobs)
