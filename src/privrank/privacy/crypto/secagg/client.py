"""The client side of SecAgg+: one client's state and its answer to each server message.

Trust: the server is *honest but curious* for the updates: it follows the protocol (it routes
messages, reports dropouts truthfully to every client) but may try to learn any individual
update from what it sees. It learns only the modular sum of the surviving clients' inputs as
long as fewer than t of any client's holders collude with it. (Bell et al. 2020 prove that a
random graph keeps this true with high probability when k and t are chosen for an assumed
fraction of corrupt clients and of dropouts; privrank's defaults, see
:mod:`~privrank.privacy.crypto.secagg.config`, are chosen for dropout up to 30 %, and their
failure bound against a given corrupt fraction is not computed here.) A client enforces the
rules that protect it regardless of what the server asks:

- it discloses, for each peer, *either* the share of the peer's self-mask seed (peer survived)
  *or* the share of its mask private key (peer dropped), never both, across all requests of a
  round, and never its own key's share;
- it refuses to help unmask a round with fewer survivors than ``min_survivors`` (the floor
  distributed DP's accounting assumes) or with fewer than t surviving holders in its
  neighbourhood.

Masked input of client ``u`` with neighbours ``N(u)`` that shared keys, in Z_R:

    y_u = x_u + PRG(b_u) + Σ_{v ∈ N(u), u < v} PRG(s_uv) − Σ_{v ∈ N(u), u > v} PRG(s_uv)

where ``b_u`` is a fresh 32-byte self-mask seed and ``s_uv = HKDF(X25519(s_u, S_v))`` the
pairwise seed that ``u`` and ``v`` both derive. Pairwise masks cancel in the sum over
survivors; the server removes the rest with the secrets it recovers from shares.
"""

from __future__ import annotations

import base64
import json
import os

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.crypto.secagg import _primitives as crypto
from privrank.privacy.crypto.secagg._shamir import SHARE_BYTES, Share, split
from privrank.privacy.crypto.secagg.config import SecAggConfig
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

__all__ = ["SecAggClient", "pair_sign", "share_associated_data"]


def pair_sign(u: int, v: int) -> int:
    """+1 when ``u < v`` (u adds the pair's mask), −1 otherwise (u subtracts it)."""
    return 1 if u < v else -1


def share_associated_data(config: SecAggConfig, sender: int, receiver: int) -> bytes:
    """AES-GCM associated data of a share ciphertext: the round, the sender and the receiver."""
    return config.info(b"share") + sender.to_bytes(4, "big") + receiver.to_bytes(4, "big")


def _plaintext(sender: int, receiver: int, seed_share: Share, key_share: Share) -> bytes:
    return (
        sender.to_bytes(4, "big")
        + receiver.to_bytes(4, "big")
        + seed_share.to_bytes()
        + key_share.to_bytes()
    )


class SecAggClient:
    """One client in one round; call its methods in the order of the stages.

    Args:
        client_id: The client's id (its Shamir index is ``client_id + 1``).
        config: The round's settings (the same for every party).
    """

    def __init__(self, client_id: int, config: SecAggConfig) -> None:
        if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
            raise ConfigError(f"a client id must be an int ≥ 0. Got {client_id!r}")
        self.client_id = client_id
        self.config = config
        self._cipher_key = crypto.new_private_key()
        self._mask_key = crypto.new_private_key()
        self._seed = os.urandom(crypto.KEY_BYTES)
        self._neighbours: frozenset[int] = frozenset()
        self._threshold = 0
        self._length = 0
        self._peer_keys: dict[int, tuple[bytes, bytes]] = {}
        self._shares: dict[int, tuple[int, int]] = {}  # peer → (seed share, key share)
        self._mask_peers: tuple[int, ...] = ()
        self._sent_input = False
        self._disclosed: dict[int, str] = {}  # peer → "seed" or "key"

    # -- persistence between messages -------------------------------------------------------
    def export_state(self) -> bytes:
        """Everything the client holds between two stages, as bytes (its private keys and
        self-mask seed included: the state never leaves the device; a Flower SuperNode keeps it
        in the run's ``context.state`` between messages)."""

        def b64(raw: bytes) -> str:
            return base64.b64encode(raw).decode("ascii")

        state = {
            "client_id": self.client_id,
            "config": self.config.model_dump(mode="json"),
            "cipher_key": b64(crypto.private_bytes(self._cipher_key)),
            "mask_key": b64(crypto.private_bytes(self._mask_key)),
            "seed": b64(self._seed),
            "neighbours": sorted(self._neighbours),
            "threshold": self._threshold,
            "length": self._length,
            "peer_keys": {str(p): [b64(a), b64(b)] for p, (a, b) in self._peer_keys.items()},
            "shares": {str(p): [str(a), str(b)] for p, (a, b) in self._shares.items()},
            "mask_peers": list(self._mask_peers),
            "sent_input": self._sent_input,
            "disclosed": {str(p): kind for p, kind in self._disclosed.items()},
        }
        return json.dumps(state, sort_keys=True).encode("utf-8")

    @classmethod
    def from_state(cls, data: bytes) -> SecAggClient:
        """The client :meth:`export_state` saved.

        Raises:
            ProtocolViolation: Bytes that are not a saved client state.
        """
        try:
            state = json.loads(data.decode("utf-8"))
            client = cls(int(state["client_id"]), SecAggConfig(**state["config"]))
            raw = base64.b64decode
            client._cipher_key = crypto.private_key_from_bytes(raw(state["cipher_key"]))
            client._mask_key = crypto.private_key_from_bytes(raw(state["mask_key"]))
            client._seed = raw(state["seed"])
            client._neighbours = frozenset(int(p) for p in state["neighbours"])
            client._threshold = int(state["threshold"])
            client._length = int(state["length"])
            client._peer_keys = {
                int(p): (raw(a), raw(b)) for p, (a, b) in state["peer_keys"].items()
            }
            client._shares = {int(p): (int(a), int(b)) for p, (a, b) in state["shares"].items()}
            client._mask_peers = tuple(int(p) for p in state["mask_peers"])
            client._sent_input = bool(state["sent_input"])
            client._disclosed = {int(p): str(kind) for p, kind in state["disclosed"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProtocolViolation(f"not a saved SecAgg+ client state: {exc}") from exc
        return client

    # -- stage 1 ------------------------------------------------------------------------------
    def setup(self, message: SetupMessage) -> PublicKeys:
        """Learn the neighbours and the threshold; answer with the two public keys."""
        if message.client_id != self.client_id:
            raise ProtocolViolation(
                f"client {self.client_id} got client {message.client_id}'s setup"
            )
        self._neighbours = frozenset(message.neighbours) - {self.client_id}
        self._threshold = message.threshold
        self._length = message.vector_length
        return PublicKeys(
            self.client_id,
            crypto.public_bytes(self._cipher_key),
            crypto.public_bytes(self._mask_key),
        )

    # -- stage 2 ------------------------------------------------------------------------------
    def share_keys(self, message: NeighbourKeys) -> EncryptedShares:
        """Shamir-share the self-mask seed and the mask private key among the holders (this
        client and the neighbours that advertised keys), encrypting each neighbour's shares.

        Raises:
            SecAggAbort: Fewer than t holders: the secrets could not be recovered.
            ProtocolViolation: Keys of a client that is not a neighbour.
        """
        strangers = set(message.keys) - self._neighbours
        if strangers:
            raise ProtocolViolation(
                f"client {self.client_id} got keys of non-neighbours {sorted(strangers)[:5]}"
            )
        self._peer_keys = dict(message.keys)
        holders = [self.client_id, *sorted(self._peer_keys)]
        if len(holders) < self._threshold:
            raise SecAggAbort(
                f"client {self.client_id} has {len(holders)} holders for its secrets, fewer than "
                f"the threshold t={self._threshold}"
            )
        xs = [h + 1 for h in holders]
        seed_shares = split(self._seed, self._threshold, xs)
        key_shares = split(crypto.private_bytes(self._mask_key), self._threshold, xs)
        ciphertexts: dict[int, bytes] = {}
        for holder, seed_share, key_share in zip(holders, seed_shares, key_shares, strict=True):
            if holder == self.client_id:
                self._shares[holder] = (seed_share.y, key_share.y)
                continue
            key = crypto.agree(
                self._cipher_key, self._peer_keys[holder][0], self.config.info(b"enc")
            )
            ciphertexts[holder] = crypto.encrypt(
                key,
                _plaintext(self.client_id, holder, seed_share, key_share),
                share_associated_data(self.config, self.client_id, holder),
            )
        return EncryptedShares(self.client_id, ciphertexts)

    # -- stage 3 ------------------------------------------------------------------------------
    def receive_shares(self, message: ShareDelivery) -> None:
        """Decrypt and keep the neighbours' shares; the senders are the clients to mask with.

        Raises:
            ProtocolViolation: A ciphertext from a non-neighbour, or one that fails
                authentication or names other parties than it was sent between.
        """
        for sender, ciphertext in message.ciphertexts.items():
            if sender not in self._peer_keys:
                raise ProtocolViolation(
                    f"client {self.client_id} got a share from non-neighbour {sender}"
                )
            key = crypto.agree(
                self._cipher_key, self._peer_keys[sender][0], self.config.info(b"enc")
            )
            plain = crypto.decrypt(
                key, ciphertext, share_associated_data(self.config, sender, self.client_id)
            )
            expected = sender.to_bytes(4, "big") + self.client_id.to_bytes(4, "big")
            if plain is None or plain[:8] != expected or len(plain) != 8 + 2 * SHARE_BYTES:
                raise ProtocolViolation(
                    f"client {self.client_id}: the share from client {sender} fails authentication"
                )
            seed_y = int.from_bytes(plain[8 : 8 + SHARE_BYTES], "big")
            key_y = int.from_bytes(plain[8 + SHARE_BYTES :], "big")
            self._shares[sender] = (seed_y, key_y)
        self._mask_peers = tuple(sorted(message.ciphertexts))

    def masked_input(self, encoded: np.ndarray) -> MaskedInput:
        """The masked update ``y = x + PRG(b) + Σ ± PRG(s_uv)`` in Z_R.

        Args:
            encoded: The update as d ring elements (uint64 in [0, R)), e.g. from
                :meth:`FixedPointRing.encode` or the distributed-DP encoder.

        Raises:
            ConfigError: Wrong length or elements outside the ring.
        """
        bits = self.config.modulus_bits
        x = np.asarray(encoded)
        if x.shape != (self._length,) or x.dtype != np.uint64:
            raise ConfigError(
                f"client {self.client_id}: the encoded update must be {self._length} uint64 ring "
                f"elements. Got shape {x.shape}, dtype {x.dtype}"
            )
        if (x >> np.uint64(bits)).any():
            raise ConfigError(f"client {self.client_id}: encoded update outside Z_2^{bits}")
        y = x + crypto.expand_mask(self._seed, self._length, bits)
        info = self.config.info(b"mask")
        for peer in self._mask_peers:
            seed = crypto.agree(self._mask_key, self._peer_keys[peer][1], info)
            mask = crypto.expand_mask(seed, self._length, bits)
            y = y + mask if pair_sign(self.client_id, peer) > 0 else y - mask
        self._sent_input = True
        return MaskedInput(self.client_id, y & np.uint64((1 << bits) - 1), bits)

    # -- stage 4 ------------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """The shares the server asks for, after checking the request is legitimate.

        Raises:
            ProtocolViolation: Both kinds of share asked for one peer (in this request or across
                requests), the client's own key share asked for while it is alive, a share it
                does not hold, or a request before it sent its input.
            SecAggAbort: Fewer survivors than ``min_survivors``, or fewer than t surviving
                holders among the client and its neighbours.
        """
        me = self.client_id
        if request.client_id != me or not self._sent_input:
            raise ProtocolViolation(f"client {me} got an unmask request it cannot answer now")
        both = set(request.self_mask_of) & set(request.pairwise_key_of)
        if both:
            raise ProtocolViolation(
                f"client {me} refuses: the server asks for both the self-mask share and the "
                f"pairwise-mask-key share of client(s) {sorted(both)}, which would reveal their "
                "unmasked input"
            )
        if me in request.pairwise_key_of:
            raise ProtocolViolation(f"client {me} refuses to reveal its own mask key's share")
        for kind, peers in (("seed", request.self_mask_of), ("key", request.pairwise_key_of)):
            for peer in peers:
                if peer not in self._shares:
                    raise ProtocolViolation(f"client {me} holds no share of client {peer}")
                if self._disclosed.get(peer, kind) != kind:
                    raise ProtocolViolation(
                        f"client {me} refuses: it already disclosed client {peer}'s "
                        f"{self._disclosed[peer]} share in this round and will not disclose "
                        f"its {kind} share too"
                    )
        if request.n_survivors < self.config.min_survivors:
            raise SecAggAbort(
                f"client {me} refuses to unmask a round with {request.n_survivors} survivors, "
                f"fewer than min_survivors={self.config.min_survivors}"
            )
        alive_holders = len(set(request.self_mask_of) & (self._neighbours | {me}))
        if alive_holders < self._threshold:
            raise SecAggAbort(
                f"client {me} sees {alive_holders} surviving holders in its neighbourhood, fewer "
                f"than the threshold t={self._threshold}"
            )
        for peer in request.self_mask_of:
            self._disclosed[peer] = "seed"
        for peer in request.pairwise_key_of:
            self._disclosed[peer] = "key"
        return UnmaskResponse(
            me,
            {peer: self._shares[peer][0] for peer in request.self_mask_of},
            {peer: self._shares[peer][1] for peer in request.pairwise_key_of},
        )
