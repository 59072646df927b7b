"""The server side of SecAgg+: the graph, routing, and unmasking the sum.

The server draws the round's communication graph (:func:`~.config.harary_graph`), relays keys
and encrypted shares, collects masked inputs, asks the survivors for shares, and recovers

    Σ_{u ∈ U3} x_u = Σ_{u ∈ U3} y_u − Σ_{u ∈ U3} PRG(b_u)
                     − Σ_{u ∈ U3} Σ_{v ∈ N(u) ∩ (U2 \\ U3)} sign(u, v) · PRG(s_uv)    (mod R)

where U2 are the clients that shared keys and U3 ⊆ U2 those whose masked input arrived
(dropouts between the two are recovered from the shares of their mask private keys; pairwise
masks between two survivors cancel). Every secret needs t shares; if any needed secret has
fewer, or fewer than ``min_survivors`` inputs arrived, the round raises
:class:`~.errors.SecAggAbort` and releases nothing.

Cost: each client has k = O(log n) neighbours, so the server relays O(n log n) ciphertexts,
interpolates O(n) secrets of t = O(log n) shares each, and for each dropped client recomputes
its O(log n) pairwise masks: O(n log n) key operations plus O(n · d) mask expansion, against
O(n²) for SecAgg's complete graph.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.crypto.secagg import _primitives as crypto
from privrank.privacy.crypto.secagg._shamir import Share, combine
from privrank.privacy.crypto.secagg.client import pair_sign
from privrank.privacy.crypto.secagg.config import SecAggConfig, harary_graph
from privrank.privacy.crypto.secagg.errors import ProtocolViolation, SecAggAbort
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

__all__ = ["SecAggServer", "UnmaskedSum"]


@dataclass(frozen=True)
class UnmaskedSum:
    """What a round releases.

    Attributes:
        total: Σ of the survivors' encoded inputs in Z_R (uint64).
        survivors: U3, the clients whose inputs are in ``total``.
        recovered: Clients that shared keys but dropped before their input arrived (their
            pairwise masks were removed with their recovered mask keys).
        dropped_early: Clients that dropped before sharing keys.
    """

    total: np.ndarray
    survivors: tuple[int, ...]
    recovered: tuple[int, ...]
    dropped_early: tuple[int, ...]


@dataclass
class _State:
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    u2: frozenset[int] = frozenset()
    u3: frozenset[int] = frozenset()
    total: np.ndarray | None = None


class SecAggServer:
    """The server of one round.

    Args:
        config: The round's settings.
        client_ids: The clients selected for the round (distinct ints ≥ 0).
        vector_length: d.
        graph_seed: Seed of the graph's random permutation (``None``: from :mod:`secrets`).
    """

    def __init__(
        self,
        config: SecAggConfig,
        client_ids: Sequence[int],
        vector_length: int,
        *,
        graph_seed: int | None = None,
    ) -> None:
        ids = [int(c) for c in client_ids]
        if len(set(ids)) != len(ids) or any(c < 0 for c in ids) or len(ids) < 2:
            raise ConfigError("a SecAgg+ round needs at least 2 distinct client ids ≥ 0")
        if vector_length < 1:
            raise ConfigError(f"vector_length must be ≥ 1. Got {vector_length!r}")
        self.config = config
        self.client_ids = tuple(sorted(ids))
        self.vector_length = int(vector_length)
        self.degree = config.degree_for(len(ids))
        self.threshold = config.threshold_for(self.degree)
        seed = secrets.randbits(64) if graph_seed is None else graph_seed
        self.neighbours = harary_graph(list(self.client_ids), self.degree, random.Random(seed))
        self._state = _State()
        self._responses: dict[int, UnmaskResponse] = {}

    # -- stage 1 ------------------------------------------------------------------------------
    def setup_messages(self) -> dict[int, SetupMessage]:
        """One setup message per client."""
        return {
            c: SetupMessage(
                c, tuple(sorted(self.neighbours[c])), self.threshold, self.vector_length
            )
            for c in self.client_ids
        }

    def receive_public_keys(self, messages: Iterable[PublicKeys]) -> dict[int, NeighbourKeys]:
        """U1: clients that advertised keys; each gets its U1-neighbours' keys."""
        keys = self._state.keys
        for m in messages:
            self._known(m.client_id)
            keys[m.client_id] = (m.cipher_key, m.mask_key)
        return {
            c: NeighbourKeys(c, {v: keys[v] for v in sorted(self.neighbours[c]) if v in keys})
            for c in keys
        }

    # -- stage 2 ------------------------------------------------------------------------------
    def route_shares(self, messages: Iterable[EncryptedShares]) -> dict[int, ShareDelivery]:
        """U2: clients that sent shares; each gets the ciphertexts U2-neighbours sent it."""
        inbox: dict[int, dict[int, bytes]] = {}
        senders = set()
        for m in messages:
            self._known(m.client_id)
            senders.add(m.client_id)
            for receiver, ciphertext in m.ciphertexts.items():
                if receiver not in self.neighbours[m.client_id]:
                    raise ProtocolViolation(
                        f"client {m.client_id} addressed a share to non-neighbour {receiver}"
                    )
                inbox.setdefault(receiver, {})[m.client_id] = ciphertext
        self._state.u2 = frozenset(senders)
        return {
            c: ShareDelivery(
                c, {s: ct for s, ct in sorted(inbox.get(c, {}).items()) if s in senders}
            )
            for c in sorted(senders)
        }

    # -- stage 3 ------------------------------------------------------------------------------
    def receive_masked_inputs(self, messages: Iterable[MaskedInput]) -> dict[int, UnmaskRequest]:
        """U3: clients whose masked input arrived; their sum is kept and each gets its request.

        Raises:
            SecAggAbort: Fewer than ``min_survivors`` inputs arrived.
        """
        bits = self.config.modulus_bits
        total = np.zeros(self.vector_length, dtype=np.uint64)
        survivors = set()
        for m in messages:
            if m.client_id not in self._state.u2:
                raise ProtocolViolation(f"masked input from client {m.client_id}, not in U2")
            if m.vector.shape != (self.vector_length,) or m.modulus_bits != bits:
                raise ProtocolViolation(f"client {m.client_id}'s masked input has a wrong shape")
            total += m.vector
            survivors.add(m.client_id)
        self._state.total = total & np.uint64((1 << bits) - 1)
        self._state.u3 = frozenset(survivors)
        if len(survivors) < self.config.min_survivors:
            raise SecAggAbort(
                f"only {len(survivors)} masked inputs arrived, fewer than min_survivors="
                f"{self.config.min_survivors}; the round releases nothing"
            )
        u2, u3 = self._state.u2, self._state.u3
        return {
            v: UnmaskRequest(
                v,
                len(u3),
                tuple(sorted(u for u in self.neighbours[v] | {v} if u in u3)),
                tuple(sorted(u for u in self.neighbours[v] if u in u2 and u not in u3)),
            )
            for v in sorted(u3)
        }

    # -- stage 4 ------------------------------------------------------------------------------
    def unmask(self, responses: Iterable[UnmaskResponse]) -> UnmaskedSum:
        """Recover the secrets from the shares and return the sum of the survivors' inputs.

        Raises:
            SecAggAbort: Some needed secret has fewer than t shares.
        """
        state = self._state
        if state.total is None:
            raise ProtocolViolation("unmask called before the masked inputs were received")
        seed_shares: dict[int, list[Share]] = {}
        key_shares: dict[int, list[Share]] = {}
        for r in responses:
            if r.client_id not in state.u3:
                continue
            for peer, y in r.self_mask_shares.items():
                seed_shares.setdefault(peer, []).append(Share(r.client_id + 1, y))
            for peer, y in r.pairwise_key_shares.items():
                key_shares.setdefault(peer, []).append(Share(r.client_id + 1, y))
        t, bits, d = self.threshold, self.config.modulus_bits, self.vector_length
        recovered = sorted(
            u for u in state.u2 - state.u3 if any(v in state.u3 for v in self.neighbours[u])
        )
        short = [
            (u, kind, len(pool.get(u, [])))
            for kind, pool, needed in (
                ("self-mask seed", seed_shares, sorted(state.u3)),
                ("mask key", key_shares, recovered),
            )
            for u in needed
            if len(pool.get(u, [])) < t
        ]
        if short:
            u, kind, got = short[0]
            raise SecAggAbort(
                f"the round aborts: {len(short)} secret(s) cannot be recovered, e.g. client "
                f"{u}'s {kind} has {got} share(s), fewer than the threshold t={t}; nothing is "
                "released"
            )
        total = state.total.copy()
        for u in sorted(state.u3):
            total -= crypto.expand_mask(combine(seed_shares[u], t), d, bits)
        info = self.config.info(b"mask")
        for u in recovered:
            key = crypto.private_key_from_bytes(combine(key_shares[u], t))
            for v in sorted(self.neighbours[u] & state.u3):
                mask = crypto.expand_mask(crypto.agree(key, state.keys[v][1], info), d, bits)
                # v added sign(v, u) · PRG(s_uv); take it out.
                total = total - mask if pair_sign(v, u) > 0 else total + mask
        return UnmaskedSum(
            total & np.uint64((1 << bits) - 1),
            tuple(sorted(state.u3)),
            tuple(recovered),
            tuple(sorted(set(self.client_ids) - state.u2)),
        )

    def _known(self, client_id: int) -> None:
        if client_id not in self.neighbours:
            raise ProtocolViolation(f"client {client_id} is not in this round")
