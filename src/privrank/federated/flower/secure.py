"""SecAgg+ on the Flower path: the simulator's protocol, its stages carried by Flower messages.

The deployment runs privrank's own SecAgg+ (:mod:`privrank.privacy.crypto.secagg`, the one the
simulator runs in-process, Bell et al. CCS 2020: X25519 + HKDF pairwise masks on a Harary graph
of degree O(log n), Shamir-shared seeds, threshold t) with every stage one message per
SuperNode. Flower's own ``SecAggPlusWorkflow`` drives a Strategy's ``configure_fit`` /
``aggregate_fit`` through a ``LegacyContext`` and quantises float parameters itself, whereas this
ServerApp speaks the Message API directly and the simulator's ring, refusal rules and zero
updates must hold here too: so the protocol is ours, over Flower messages (the issue's
"implement the protocol and run it over Flower messages").

A secure exchange (:func:`secure_sum`, the server; :func:`device_stage`, each SuperNode):

1. ``setup``: the server sends the task (the round's :math:`H` and bound, or the item counts),
   the ring and each asked device's :class:`~privrank.privacy.crypto.secagg.SetupMessage`
   (its neighbours, t, d). Each device computes its vector, checks it on itself (shape, finite,
   L2 norm within the bound) and encodes it into the ring (a coordinate outside the range is
   refused, never clipped). A refused device of a private exchange (one with a bound) encodes
   the zero vector instead and stays in the protocol; without a bound it leaves (sends no keys).
   Round updates carry one more coordinate, the clipping bit times the bound, so adaptive
   clipping learns only the *sum* of the bits. The device keeps its encoding and its protocol
   state (private keys included) on the node (``context.state`` of the Flower run) and answers
   with its public keys.
2. ``share``: neighbours' public keys in, encrypted Shamir shares out.
3. ``mask``: the shares addressed to the device in, its masked input out.
4. ``unmask``: the server's request in (the device refuses one asking for both shares of a
   peer), shares out; the server removes the masks and decodes the sum.

**Distributed DP** (``SecureTask.noise``, Kairouz, Liu & Steinke 2021, as the simulator's
:class:`~privrank.federated.secure_aggregation.SecAggAggregator` with a mechanism): at
``setup`` each device clips its vector to the task's bound, rounds it conditionally onto the
integer grid and adds its own discrete Gaussian noise share
(:meth:`~privrank.privacy.distributed_dp.DistributedDiscreteGaussian.encode_batch`, the noise
drawn on the device from its own generator: the operating system's entropy, or, with a test
noise seed, ``[seed, round, device]``, which makes the run reproducible and NOT private) before
it masks; a refused device encodes the zero vector *with* its noise share. With a fixed clipping
norm a round then carries no clipping-bit coordinate; with adaptive clipping
(``SecureTask.bit_noise``, :mod:`privrank.privacy.distributed_dp_plan`) it carries the device's
0/1 clipping bit on the bit mechanism's own grid with its own discrete Gaussian share (a refused
device's bit is 1, beside its zero update), and the round's bound :math:`C_t` may differ from the
mechanism's :math:`C_0`: the clipped update is encoded times :math:`C_0/C_t` and the sum decoded
times :math:`C_t/C_0`, as in the simulator. The unmasked sum is the sum of the survivors' noisy
encodings exactly, so the server never sees an un-noised sum (nor an un-noised bit count).

**Who sees what.** The server sees public keys, ciphertexts of shares, masked inputs (uniform in
Z_{2^b} to it) and the unmasked *sum* of the survivors' encodings; never a device's update,
clipping bit or refusal. It is honest but curious (it follows the protocol, it may try to learn
an update from what it sees); fewer than t of any device's holders may collude with it. Devices
drop out when they do not answer in time; a round whose survivors are fewer than
``min_clients`` (or whose dropped devices' secrets lack shares) aborts: nothing is released.

These functions import no Flower code: the tests drive them in-process, the ServerApp and
ClientApp through :mod:`privrank.federated.flower.messages`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from privrank.errors import ConfigError
from privrank.federated.aggregation import RoundSum, SumAggregator
from privrank.federated.flower.devices import NodeData, device_counts, device_updates
from privrank.models._fedmf_rounds import FedMFConfig
from privrank.privacy.crypto.secagg import (
    EncryptedShares,
    FixedPointRing,
    MaskedInput,
    NeighbourKeys,
    ProtocolViolation,
    PublicKeys,
    SecAggAbort,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SetupMessage,
    ShareDelivery,
    UnmaskRequest,
    UnmaskResponse,
    encode_batch,
)
from privrank.privacy.distributed_dp import (
    DistributedDiscreteGaussian,
    DistributedDPConfig,
    clip_l2,
)
from privrank.privacy.updates import DenseUpdates

__all__ = [
    "STAGES",
    "Exchange",
    "SecureReply",
    "SecureRequest",
    "SecureTask",
    "device_noise_rng",
    "device_stage",
    "graph_seed",
    "secure_sum",
]

log = logging.getLogger(__name__)

#: The stages of one secure exchange, in order.
STAGES = ("setup", "share", "mask", "unmask")


@dataclass(frozen=True)
class SecureTask:
    """What the devices encode in the ``setup`` stage (public).

    Attributes:
        kind: ``"round"`` (the round's update and its clipping bit) or ``"counts"`` (the 0/1
            item vector, at most ``count_bound`` items).
        bound: The L2 bound every device checks its vector against (``None``: none).
        modulus_bits, value_range, scale: The ring (:class:`FixedPointRing`).
        secagg: The protocol's settings (round id, degree, threshold, ``min_survivors``).
        config: The objective (``round``).
        item_factors: :math:`H` (``round``).
        count_bound: At most this many items per device (``counts``; ``None``: all).
        noise: Distributed DP: the calibrated mechanism's settings (its grid scale fixed, so
            every device rebuilds the server's σ and scale); ``None``: plain SecAgg+.
        noise_seed: Distributed DP, tests only: each device's noise generator is seeded with
            ``[noise_seed, round, device]`` (reproducible, and known to whoever knows the seed:
            not private). ``None``: the device's own entropy.
        bit_noise: Distributed DP with adaptive clipping: the clipping bit's mechanism
            settings (dimension 1, its grid scale fixed); ``None``: no bit coordinate.
    """

    kind: str
    bound: float | None
    modulus_bits: int
    value_range: float
    scale: float
    secagg: SecAggConfig
    config: FedMFConfig | None = None
    item_factors: np.ndarray | None = None
    count_bound: int | None = None
    noise: DistributedDPConfig | None = None
    noise_seed: int | None = None
    bit_noise: DistributedDPConfig | None = None

    @property
    def unit(self) -> float:
        """:math:`C_t / C_0` under distributed DP (the round's bound over the mechanism's)."""
        if self.noise is None or self.bound is None:
            return 1.0
        return float(self.bound) / self.noise.l2_clip

    def bit_mechanism(self) -> DistributedDiscreteGaussian | None:
        """The clipping bit's distributed discrete Gaussian (``None``: no bit coordinate)."""
        return None if self.bit_noise is None else DistributedDiscreteGaussian(self.bit_noise)

    def ring(self) -> FixedPointRing:
        """The fixed-point ring of the exchange."""
        return FixedPointRing(self.modulus_bits, self.value_range, self.scale)

    @property
    def carries_bit(self) -> bool:
        """A plain round's vector has one more coordinate, its clipping bit (so does a
        distributed-DP round with adaptive clipping)."""
        return self.kind == "round" and (self.noise is None or self.bit_noise is not None)

    def mechanism(self) -> DistributedDiscreteGaussian:
        """The distributed discrete Gaussian of the exchange.

        Raises:
            ConfigError: A plain exchange (no ``noise``), or a mechanism whose grid does not
                match the task's ring.
        """
        if self.noise is None:
            raise ConfigError("a plain secure exchange has no distributed-DP mechanism")
        mechanism = DistributedDiscreteGaussian(self.noise)
        if mechanism.scale != self.scale or self.noise.modulus_bits != self.modulus_bits:
            raise ConfigError("the distributed-DP mechanism does not match the exchange's ring")
        return mechanism

    @classmethod
    def distributed(
        cls,
        kind: str,
        mechanism: DistributedDiscreteGaussian,
        secagg: SecAggConfig,
        *,
        bound: float | None = None,
        bits: DistributedDiscreteGaussian | None = None,
        **rest: object,
    ) -> SecureTask:
        """The task of a distributed-DP exchange under ``mechanism`` (its grid and ring), at
        the round's ``bound`` (default: the mechanism's) and with the clipping bit's
        mechanism ``bits`` (adaptive clipping)."""
        noise = mechanism.config.model_copy(update={"scale": mechanism.scale})
        bit_noise = None if bits is None else bits.config.model_copy(update={"scale": bits.scale})
        limit = mechanism.config.l2_clip if bound is None else float(bound)
        return cls(
            kind, limit, noise.modulus_bits, mechanism.config.l2_clip, mechanism.scale, secagg,
            noise=noise, bit_noise=bit_noise, **rest,  # type: ignore[arg-type]
        )  # fmt: skip


@dataclass(frozen=True)
class SecureRequest:
    """One stage's message to a SuperNode: one protocol message per asked device.

    Attributes:
        stage: One of :data:`STAGES`.
        round_index: The exchange's round (bound into every key via ``secagg.round_id``).
        devices: The node's devices this stage is for.
        messages: ``messages[i]`` the server's protocol message to ``devices[i]`` (bytes).
        task: The task (``setup`` only).
    """

    stage: str
    round_index: int
    devices: np.ndarray
    messages: list[bytes]
    task: SecureTask | None = None


@dataclass(frozen=True)
class SecureReply:
    """A SuperNode's answer: one protocol message per device that answered."""

    devices: np.ndarray
    messages: list[bytes] = field(default_factory=list)


def _state_key(round_index: int, device: int) -> str:
    return f"secagg/{round_index}/{device}"


def _encoded_key(round_index: int, device: int) -> str:
    return f"secagg/{round_index}/{device}/x"


def _vectors(node: NodeData, devices: np.ndarray, task: SecureTask) -> np.ndarray:
    """The devices' plaintext vectors (they never leave the node)."""
    if task.kind == "counts":
        return device_counts(node, task.count_bound)[node.rows_of(devices)]
    if task.config is None or task.item_factors is None:
        raise ConfigError("a secure round's setup carries no model")
    vectors, unclipped = device_updates(node, devices, task.config, task.item_factors, task.bound)
    if not task.carries_bit:
        return vectors
    # The clipping bit rides along as one more coordinate, bit · bound, inside the ring's range
    # (under distributed DP the 0/1 bit itself: the bit mechanism scales it to its grid).
    scale = 1.0 if task.bound is None or task.noise is not None else float(task.bound)
    return np.column_stack([vectors, unclipped.astype(np.float64) * scale])


def _encode(node: NodeData, devices: np.ndarray, task: SecureTask) -> dict[int, np.ndarray]:
    """Each device checks and encodes its vector; a refused one sends zero (with a bound) or
    leaves (without)."""
    vectors = _vectors(node, devices, task)
    dim = vectors.shape[1] - (1 if task.carries_bit else 0)
    checker = SumAggregator(dim, task.bound, 0)
    ok, _ = checker.accepted_mask(DenseUpdates(vectors[:, :dim]))
    if task.noise is not None:
        return _encode_noisy(vectors, ok, devices, task)
    ring = task.ring()
    encoded, refused = encode_batch(ring, vectors)
    kept = np.setdiff1d(np.arange(len(devices)), refused)
    rows = dict(zip(kept.tolist(), encoded, strict=True))
    zero = ring.to_ring(np.zeros(vectors.shape[1], dtype=np.int64))
    out = {}
    for row, device in enumerate(devices.tolist()):
        if ok[row] and row in rows:
            out[int(device)] = rows[row]
        elif task.bound is not None:
            out[int(device)] = zero
    return out


def device_noise_rng(task: SecureTask, round_index: int, device: int) -> np.random.Generator:
    """A device's noise generator under distributed DP (see :class:`SecureTask`)."""
    if task.noise_seed is None:
        return np.random.default_rng()  # the operating system's entropy
    return np.random.default_rng([task.noise_seed, round_index, device])


def _encode_noisy(
    vectors: np.ndarray, ok: np.ndarray, devices: np.ndarray, task: SecureTask
) -> dict[int, np.ndarray]:
    """Each device's clipped, conditionally rounded and noised encoding (a refused device's is
    its noise alone: it stays in the protocol and adds its share)."""
    mechanism = task.mechanism()
    bit_mechanism = task.bit_mechanism()
    assert task.bound is not None
    dim = mechanism.config.dimension
    # The device clipped with its update's factored norm; clipping the explicit vector again
    # removes the float slack the mechanism's exact check would refuse (the simulator's step),
    # then it is brought to the mechanism's bound C_0 (divided by C_t / C_0).
    exact, _ = clip_l2(np.where(ok[:, None], vectors[:, :dim], 0.0), task.bound)
    if task.unit != 1.0:
        exact, _ = clip_l2(exact / task.unit, mechanism.config.l2_clip)
    out = {}
    for row, device in enumerate(devices.tolist()):
        rng = device_noise_rng(task, task.secagg.round_id, int(device))
        encoded, refused = mechanism.encode_batch(exact[row : row + 1], rng)
        bit = float(vectors[row, dim]) if bit_mechanism is not None and ok[row] else 1.0
        if len(refused):  # not finite after all: the zero vector, with its noise share
            encoded, _ = mechanism.encode_batch(np.zeros((1, dim)), rng)
            bit = 1.0
        if bit_mechanism is not None:
            bit_encoded, _ = bit_mechanism.encode_batch(np.asarray([[bit]]), rng)
            encoded = np.concatenate([encoded, bit_encoded], axis=1)
        out[int(device)] = encoded[0]
    return out


def device_stage(
    node: NodeData, state: MutableMapping[str, bytes], request: SecureRequest
) -> SecureReply:
    """A SuperNode's answer to one stage, for each of its asked devices.

    ``state`` is the node's memory between stages (the Flower run's ``context.state``): each
    device's protocol state and its encoded vector, written at ``setup`` and removed after
    ``unmask``. A device whose protocol step fails (a :class:`ProtocolViolation` or an abort it
    refuses to help with) does not answer: to the server it has dropped out.

    Raises:
        ConfigError: Unknown stage, or a setup without its task.
    """
    devices = np.asarray(request.devices, dtype=np.int64)
    if request.stage not in STAGES or len(request.messages) != len(devices):
        raise ConfigError(f"secure exchange: stage {request.stage!r} with mismatched messages")
    node.rows_of(devices)
    answered: list[int] = []
    messages: list[bytes] = []
    encoded: dict[int, np.ndarray] = {}
    if request.stage == "setup":
        if request.task is None:
            raise ConfigError("secure exchange: a setup without its task")
        encoded = _encode(node, devices, request.task)
    for device, raw in zip(devices.tolist(), request.messages, strict=True):
        key = _state_key(request.round_index, device)
        try:
            if request.stage == "setup":
                if device not in encoded:
                    continue
                assert request.task is not None
                client = SecAggClient(device, request.task.secagg)
                out = client.setup(SetupMessage.from_bytes(raw)).to_bytes()
                state[_encoded_key(request.round_index, device)] = encoded[device].tobytes()
            else:
                if key not in state:
                    continue
                client = SecAggClient.from_state(state[key])
                out = _answer(client, request.stage, raw, state, request.round_index)
        except (ProtocolViolation, SecAggAbort, ValueError) as exc:
            log.warning("device %d refuses stage %s: %s", device, request.stage, exc)
            state.pop(key, None)
            state.pop(_encoded_key(request.round_index, device), None)
            continue
        if request.stage == "unmask":
            state.pop(key, None)
            state.pop(_encoded_key(request.round_index, device), None)
        else:
            state[key] = client.export_state()
        answered.append(device)
        messages.append(out)
    return SecureReply(np.asarray(answered, dtype=np.int64), messages)


def _answer(
    client: SecAggClient,
    stage: str,
    raw: bytes,
    state: MutableMapping[str, bytes],
    round_index: int,
) -> bytes:
    if stage == "share":
        return client.share_keys(NeighbourKeys.from_bytes(raw)).to_bytes()
    if stage == "mask":
        client.receive_shares(ShareDelivery.from_bytes(raw))
        vector = np.frombuffer(
            state[_encoded_key(round_index, client.client_id)], dtype=np.uint64
        ).copy()
        return client.masked_input(vector).to_bytes()
    return client.unmask(UnmaskRequest.from_bytes(raw)).to_bytes()


#: ``exchange(stage, node → request)`` → the replies of the nodes that answered in time.
Exchange = Callable[[str, Mapping[int, SecureRequest]], Sequence[tuple[int, SecureReply]]]


def secure_sum(
    exchange: Exchange,
    assignment: Mapping[int, np.ndarray],
    task: SecureTask,
    dim: int,
    round_index: int,
    graph_seed: int,
) -> tuple[RoundSum, np.ndarray]:
    """Run SecAgg+ over the assigned devices and decode the unmasked sum (the server's side).

    Args:
        exchange: Sends one stage to the nodes and returns their replies.
        assignment: Node → its devices in the exchange.
        task: What the devices encode (sent with ``setup``).
        dim: The vector's length (without the clipping-bit coordinate of a round).
        round_index: Names the exchange in the stages' messages.
        graph_seed: Seed of the SecAgg+ graph (public).

    Returns:
        ``(sum, survivors)``: the decoded sum of the survivors' encodings (``unclipped`` the
        sum of their clipping bits in a round; ``refused["dropped"]`` the devices that did
        not survive) and the surviving devices.

    Raises:
        SecAggAbort: Fewer survivors than ``task.secagg.min_survivors``, or too few shares.
    """
    owner = {int(d): int(n) for n, ds in assignment.items() for d in np.asarray(ds).tolist()}
    devices = sorted(owner)
    length = dim + (1 if task.carries_bit else 0)
    if len(devices) < max(task.secagg.min_survivors, 2):
        # The simulator's rule: too few inputs for the protocol, nothing is unmasked.
        empty = RoundSum(np.zeros(dim), 0, 0, {"too_few_clients": len(devices)})
        return empty, np.zeros(0, dtype=np.int64)
    server = SecAggServer(task.secagg, devices, length, graph_seed=graph_seed)

    def send(stage: str, outgoing: Mapping[int, bytes]) -> dict[int, bytes]:
        requests = {}
        for node, ds in assignment.items():
            mine = [d for d in np.asarray(ds).tolist() if d in outgoing]
            if mine:
                requests[node] = SecureRequest(
                    stage,
                    round_index,
                    np.asarray(mine, dtype=np.int64),
                    [outgoing[d] for d in mine],
                    task if stage == "setup" else None,
                )
        answers: dict[int, bytes] = {}
        for node, reply in exchange(stage, requests):
            for device, message in zip(reply.devices.tolist(), reply.messages, strict=False):
                if owner.get(int(device)) != node or int(device) not in outgoing:
                    log.warning("%s: node %d answered for device %d it was not asked", stage,
                                node, device)  # fmt: skip
                    continue
                answers[int(device)] = message
        return answers

    def parsed(answers: Mapping[int, bytes], read: Callable[[bytes], object]) -> list:
        out = []
        for device, raw in answers.items():
            try:
                message = read(raw)
            except ValueError as exc:
                log.warning("device %d sent a malformed message: %s", device, exc)
                continue
            if getattr(message, "client_id", None) != device:
                log.warning("device %d sent another device's message", device)
                continue
            out.append(message)
        return out

    setups = {c: m.to_bytes() for c, m in server.setup_messages().items()}
    keys = parsed(send("setup", setups), PublicKeys.from_bytes)
    neighbours = server.receive_public_keys(keys)
    shares = parsed(
        send("share", {c: m.to_bytes() for c, m in neighbours.items()}),
        EncryptedShares.from_bytes,
    )
    deliveries = server.route_shares(shares)
    bits = task.secagg.modulus_bits
    inputs = parsed(
        send("mask", {c: m.to_bytes() for c, m in deliveries.items()}),
        lambda raw: MaskedInput.from_bytes(raw, bits),
    )
    requests = server.receive_masked_inputs(inputs)
    responses = parsed(
        send("unmask", {c: m.to_bytes() for c, m in requests.items()}),
        UnmaskResponse.from_bytes,
    )
    result = server.unmask(responses)
    decoded = task.ring().decode(result.total)
    survivors = np.asarray(sorted(result.survivors), dtype=np.int64)
    unclipped, noisy_unclipped = 0, None
    bit_mechanism = task.bit_mechanism()
    if bit_mechanism is not None:  # distributed DP: the noisy bit sum on its own grid
        noisy_unclipped = float(bit_mechanism.decode(np.asarray(result.total)[dim:])[0])
    elif task.carries_bit:
        scale = 1.0 if task.bound is None else float(task.bound)
        unclipped = round(float(decoded[dim]) / scale)
    total = np.asarray(decoded[:dim], dtype=np.float64) * task.unit
    refused = {"dropped": len(devices) - len(survivors)}
    summed = RoundSum(total, len(survivors), unclipped, refused, noisy_unclipped=noisy_unclipped)
    return summed, survivors


def graph_seed(seed: int, round_index: int, cohort: int) -> int:
    """The SecAgg+ graph's seed of a round: the simulator's draw
    (:class:`~privrank.federated.secure_aggregation.SecAggAggregator`) from the run's seed."""
    rng = np.random.default_rng([seed, round_index, 7])
    rng.random(cohort)  # the simulator's simulated drop-outs, drawn first
    return int(rng.integers(2**62))
