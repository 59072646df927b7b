"""The fedmf ClientApp: what a SuperNode runs for its devices.

Start a device (a SuperNode holding the devices of one node file) with::

    privrank federated device --node-file DEVICES/node-3.npz --superlink 127.0.0.1:9091

which runs ``flower-supernode --insecure --superlink … --port … --node-config "node-file='…'"``; the
SuperNode starts this ClientApp for each run. Each message is answered from the node file alone
(:mod:`privrank.federated.flower.devices`); what is sent back is listed in
:mod:`privrank.federated.flower.messages`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from privrank.federated.flower import messages
from privrank.federated.flower.devices import NodeData, device_counts, device_updates, load_node
from privrank.federated.flower.secure import device_stage

__all__ = ["app", "secure_stage"]

app = ClientApp()


@cache
def _node(path: str) -> NodeData:
    return load_node(Path(path))


def _node_of(context: Context) -> NodeData:
    path = context.node_config.get("node-file")
    if not path:
        raise ValueError("the SuperNode has no --node-config \"node-file='…'\" (its devices)")
    return _node(str(path))


@app.query("enrol")
def enrol(message: Message, context: Context) -> Message:
    """Report this node's devices (their public enrolment numbers)."""
    node = _node_of(context)
    return Message(messages.reply(node.device_ids), reply_to=message)


@app.query("counts")
def counts(message: Message, context: Context) -> Message:
    """Each device's 0/1 item vector (at most ``bound`` items)."""
    node = _node_of(context)
    bound = messages.parse_counts_request(message.content)
    return Message(messages.reply(node.device_ids, device_counts(node, bound)), reply_to=message)


@app.train("round")
def train(message: Message, context: Context) -> Message:
    """The round's update of each asked device, clipped on the device."""
    node = _node_of(context)
    request = messages.parse_round_request(message.content)
    vectors, unclipped = device_updates(
        node, request.devices, request.config, request.item_factors, request.bound
    )
    return Message(messages.reply(request.devices, vectors, unclipped), reply_to=message)


#: Where a node keeps its devices' SecAgg+ state between stages (the run's ``context.state``).
_SECAGG_STATE = "privrank.secagg"


def secure_stage(node: NodeData, state: RecordDict, content: RecordDict) -> RecordDict:
    """Answer one ``train.secagg`` content for ``node``'s devices, keeping their protocol state
    in ``state`` (the run's ``context.state``) between stages."""
    request = messages.parse_secure_request(content)
    record = state.get(_SECAGG_STATE)
    kept: dict[str, bytes] = {}
    if record is not None:
        kept = {str(k): v for k, v in record.items() if isinstance(v, bytes)}
    answer = device_stage(node, kept, request)
    state[_SECAGG_STATE] = ConfigRecord(dict(kept))
    return messages.secure_reply(answer)


@app.train("secagg")
def secagg(message: Message, context: Context) -> Message:
    """One SecAgg+ stage for the asked devices (:mod:`privrank.federated.flower.secure`); their
    protocol state, private keys included, stays in this node's ``context.state``."""
    reply = secure_stage(_node_of(context), context.state, message.content)
    return Message(reply, reply_to=message)
