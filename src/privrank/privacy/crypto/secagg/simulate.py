"""Run a whole SecAgg+ round in one process for a batch of clients (the simulator's entry point).

:func:`run_round` plays every client (:class:`~.client.SecAggClient`) and the server
(:class:`~.server.SecAggServer`) through the four stages with real keys, real shares and real
masks, passing the same message objects a deployment would send, and lets clients drop out at a
chosen stage. It measures the computation time of each client and of the server (wall clock
and this thread's CPU time, which a busy machine disturbs less), and the bytes each direction
carries (:meth:`wire_bytes` of every message).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.crypto.secagg.client import SecAggClient
from privrank.privacy.crypto.secagg.config import SecAggConfig
from privrank.privacy.crypto.secagg.server import SecAggServer, UnmaskedSum

__all__ = ["RoundCost", "SimulatedRound", "run_round"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class RoundCost:
    """Cost of one simulated round.

    Attributes:
        client_seconds: Computation time (wall) of each client (all its stages).
        server_seconds: Computation time (wall) of the server (all its stages).
        client_cpu_seconds: CPU time of each client (this thread's, all its stages).
        server_cpu_seconds: CPU time of the server.
        bytes_up: Bytes of every client → server message, summed.
        bytes_down: Bytes of every server → client message, summed.
        degree: k of the round's graph.
        threshold: t.
    """

    client_seconds: np.ndarray
    server_seconds: float
    client_cpu_seconds: np.ndarray
    server_cpu_seconds: float
    bytes_up: int
    bytes_down: int
    degree: int
    threshold: int


@dataclass(frozen=True)
class SimulatedRound:
    """The released sum and the cost of a simulated round."""

    result: UnmaskedSum
    cost: RoundCost


def run_round(
    encoded: np.ndarray,
    config: SecAggConfig,
    *,
    client_ids: Sequence[int] | None = None,
    drop_before_sharing: Collection[int] = (),
    drop_after_sharing: Collection[int] = (),
    drop_before_unmasking: Collection[int] = (),
    graph_seed: int | None = None,
) -> SimulatedRound:
    """One SecAgg+ round over the rows of ``encoded`` (n × d ring elements, uint64).

    Args:
        encoded: Row i is client ``client_ids[i]``'s encoded update.
        config: The round's settings.
        client_ids: Ids of the rows (default ``0 … n−1``).
        drop_before_sharing: Clients that advertise keys, then vanish (before sharing).
        drop_after_sharing: Clients that share keys, then vanish before sending their input
            (the case that needs their mask keys recovered).
        drop_before_unmasking: Clients that send their input, then do not answer the unmask
            request.
        graph_seed: Seed of the server's graph.

    Raises:
        SecAggAbort: Too few survivors or shares (nothing released).
        ProtocolViolation: A party broke the protocol.
    """
    x = np.asarray(encoded)
    if x.ndim != 2 or x.dtype != np.uint64:
        raise ConfigError(f"encoded updates must be an n x d uint64 array. Got {x.dtype} {x.shape}")
    ids = list(range(x.shape[0])) if client_ids is None else [int(c) for c in client_ids]
    if len(ids) != x.shape[0]:
        raise ConfigError(f"{len(ids)} client ids for {x.shape[0]} updates")
    row = {c: i for i, c in enumerate(ids)}
    spent = dict.fromkeys(ids, 0.0)
    cpu = dict.fromkeys(ids, 0.0)
    up = down = 0
    server_time = server_cpu = 0.0

    def as_client(c: int, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        start, start_cpu = time.perf_counter(), time.thread_time()
        out = call(*args, **kwargs)
        spent[c] += time.perf_counter() - start
        cpu[c] += time.thread_time() - start_cpu
        return out

    def as_server(call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        nonlocal server_time, server_cpu
        start, start_cpu = time.perf_counter(), time.thread_time()
        out = call(*args, **kwargs)
        server_time += time.perf_counter() - start
        server_cpu += time.thread_time() - start_cpu
        return out

    server = as_server(lambda: SecAggServer(config, ids, x.shape[1], graph_seed=graph_seed))
    clients = {c: SecAggClient(c, config) for c in ids}

    setups = as_server(server.setup_messages)
    down += sum(m.wire_bytes() for m in setups.values())
    keys = [as_client(c, clients[c].setup, setups[c]) for c in ids]
    up += sum(m.wire_bytes() for m in keys)

    neighbour_keys = as_server(server.receive_public_keys, keys)
    down += sum(m.wire_bytes() for m in neighbour_keys.values())
    gone = set(drop_before_sharing)
    shares = [as_client(c, clients[c].share_keys, neighbour_keys[c]) for c in ids if c not in gone]
    up += sum(m.wire_bytes() for m in shares)

    deliveries = as_server(server.route_shares, shares)
    down += sum(m.wire_bytes() for m in deliveries.values())
    gone |= set(drop_after_sharing)
    inputs = []
    for c in ids:
        if c in gone:
            continue
        as_client(c, clients[c].receive_shares, deliveries[c])
        inputs.append(as_client(c, clients[c].masked_input, x[row[c]]))
    up += sum(m.wire_bytes() for m in inputs)

    requests = as_server(server.receive_masked_inputs, inputs)
    down += sum(m.wire_bytes() for m in requests.values())
    gone |= set(drop_before_unmasking)
    responses = [as_client(c, clients[c].unmask, requests[c]) for c in requests if c not in gone]
    up += sum(m.wire_bytes() for m in responses)

    result = as_server(server.unmask, responses)
    cost = RoundCost(
        np.array([spent[c] for c in ids]),
        server_time,
        np.array([cpu[c] for c in ids]),
        server_cpu,
        up,
        down,
        server.degree,
        server.threshold,
    )
    return SimulatedRound(result, cost)
