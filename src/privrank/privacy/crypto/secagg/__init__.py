"""Secure aggregation: SecAgg+ (Bell, Bonawitz, Gascón, Lepoint & Raykova, CCS 2020).

The server learns only the modular sum of the surviving clients' quantised updates.

- :class:`FixedPointRing`: updates to Z_{2^b} with an explicit clipping range (out of range is
  refused, never clipped).
- :class:`SecAggClient` / :class:`SecAggServer`: one party each, one method per stage, on the
  explicit message objects of :mod:`~privrank.privacy.crypto.secagg.messages` (what a Flower
  deployment carries).
- :func:`run_round`: a whole round for a batch of clients in one process (the simulator's entry
  point), with dropouts and cost accounting.

Trust model: the server is honest but curious about individual updates (it follows the
protocol, may try to learn from what it sees) and learns nothing but the sum while fewer than
t of any client's k + 1 holders collude with it; clients refuse requests that would reveal a
peer's input (:class:`ProtocolViolation`). Primitives come from ``cryptography``: X25519,
HKDF-SHA256, AES-256-GCM, AES-256-CTR.

Names are imported on first use, so that ``privrank.privacy.crypto.secagg.errors`` (which the
distributed-DP encoder raises) does not need ``cryptography``, an optional extra
(``pip install 'privrank[secagg]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privrank._lazy import lazy_exports

if TYPE_CHECKING:
    from privrank.privacy.crypto.secagg.client import SecAggClient
    from privrank.privacy.crypto.secagg.config import SecAggConfig, harary_graph
    from privrank.privacy.crypto.secagg.errors import (
        ProtocolViolation,
        SecAggAbort,
        UpdateOutOfRange,
    )
    from privrank.privacy.crypto.secagg.messages import (
        EncryptedShares,
        MaskedInput,
        NeighbourKeys,
        PublicKeys,
        SetupMessage,
        ShareDelivery,
        UnmaskRequest,
        UnmaskResponse,
    )
    from privrank.privacy.crypto.secagg.ring import FixedPointRing, encode_batch
    from privrank.privacy.crypto.secagg.server import SecAggServer, UnmaskedSum
    from privrank.privacy.crypto.secagg.simulate import RoundCost, SimulatedRound, run_round

_WHERE = {
    "client": ["SecAggClient"],
    "config": ["SecAggConfig", "harary_graph"],
    "errors": ["ProtocolViolation", "SecAggAbort", "UpdateOutOfRange"],
    "messages": [
        "EncryptedShares",
        "MaskedInput",
        "NeighbourKeys",
        "PublicKeys",
        "SetupMessage",
        "ShareDelivery",
        "UnmaskRequest",
        "UnmaskResponse",
    ],
    "ring": ["FixedPointRing", "encode_batch"],
    "server": ["SecAggServer", "UnmaskedSum"],
    "simulate": ["RoundCost", "SimulatedRound", "run_round"],
}

__all__ = [
    "EncryptedShares",
    "FixedPointRing",
    "MaskedInput",
    "NeighbourKeys",
    "ProtocolViolation",
    "PublicKeys",
    "RoundCost",
    "SecAggAbort",
    "SecAggClient",
    "SecAggConfig",
    "SecAggServer",
    "SetupMessage",
    "ShareDelivery",
    "SimulatedRound",
    "UnmaskRequest",
    "UnmaskResponse",
    "UnmaskedSum",
    "UpdateOutOfRange",
    "encode_batch",
    "harary_graph",
    "run_round",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, exported=__all__)
