"""The messages of a SecAgg+ round, as explicit objects a transport carries.

A round has four exchanges (Bell et al. 2020, Fig. 2; Flower's SecAgg+ workflow has the same
stages). ``↓`` is server → one client, ``↑`` is one client → server:

1. ``↓`` :class:`SetupMessage` (the client's neighbours and the threshold);
   ``↑`` :class:`PublicKeys` (two X25519 public keys: one to encrypt shares, one to agree masks).
2. ``↓`` :class:`NeighbourKeys` (the neighbours' public keys);
   ``↑`` :class:`EncryptedShares` (Shamir shares of the self-mask seed and of the mask private
   key, one AES-GCM ciphertext per neighbour).
3. ``↓`` :class:`ShareDelivery` (the ciphertexts addressed to the client);
   ``↑`` :class:`MaskedInput` (the masked update in Z_R).
4. ``↓`` :class:`UnmaskRequest` (whose self-mask share, whose mask-key share);
   ``↑`` :class:`UnmaskResponse` (the shares asked for, if the request is legitimate).

:meth:`to_bytes` packs a message (big-endian: client ids and counts as 4 bytes, keys 32,
Shamir shares 66, ciphertexts with a 4-byte length, a vector of d ring elements as
``d · ⌈b/8⌉`` little-endian bytes) and ``from_bytes`` reads it back; the message's type is
known from the stage, so it is not encoded. :meth:`wire_bytes` is ``len(to_bytes())``, computed
without packing: the payload a transport carries, without its own framing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np

from privrank.privacy.crypto.secagg._primitives import KEY_BYTES
from privrank.privacy.crypto.secagg._shamir import SHARE_BYTES

__all__ = [
    "EncryptedShares",
    "MaskedInput",
    "NeighbourKeys",
    "PublicKeys",
    "SetupMessage",
    "ShareDelivery",
    "UnmaskRequest",
    "UnmaskResponse",
]

_ID = 4


class _Reader:
    """Reads big-endian fields from a packed message; any mismatch is a ValueError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = bytes(data), 0, what

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise ValueError(f"truncated {self.what} message")
        out = self.data[self.at : self.at + size]
        self.at += size
        return out

    def left(self) -> int:
        return len(self.data) - self.at

    def done(self) -> None:
        if self.left():
            raise ValueError(f"{self.left()} trailing bytes after a {self.what} message")


def _u32s(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def _pack_ciphertexts(client_id: int, ciphertexts: Mapping[int, bytes]) -> bytes:
    parts = [_u32s(client_id)]
    for peer, ct in sorted(ciphertexts.items()):
        parts += [_u32s(peer, len(ct)), ct]
    return b"".join(parts)


def _read_ciphertexts(data: bytes, what: str) -> tuple[int, dict[int, bytes]]:
    r = _Reader(data, what)
    client_id, out = r.u32(), {}
    while r.left():
        peer, size = r.u32(), r.u32()
        out[peer] = r.take(size)
    return client_id, out


@dataclass(frozen=True)
class SetupMessage:
    """``↓`` Stage 1: who the client's neighbours are and the round's parameters.

    Attributes:
        client_id: The receiving client.
        neighbours: Its neighbours in the round's graph.
        threshold: t, the shares needed to recover one of its secrets.
        vector_length: d, the length of the update.
    """

    client_id: int
    neighbours: tuple[int, ...]
    threshold: int
    vector_length: int

    def wire_bytes(self) -> int:
        """Payload bytes."""
        return _ID * (3 + len(self.neighbours))

    def to_bytes(self) -> bytes:
        """Packed: id, threshold, d, neighbours."""
        return _u32s(self.client_id, self.threshold, self.vector_length, *self.neighbours)

    @classmethod
    def from_bytes(cls, data: bytes) -> SetupMessage:
        """Read :meth:`to_bytes`' output (ValueError when malformed)."""
        r = _Reader(data, "setup")
        head = (r.u32(), r.u32(), r.u32())
        if r.left() % 4:
            raise ValueError("malformed setup message")
        neighbours = tuple(r.u32() for _ in range(r.left() // 4))
        return cls(head[0], neighbours, head[1], head[2])


@dataclass(frozen=True)
class PublicKeys:
    """``↑`` Stage 1: the client's two X25519 public keys.

    Attributes:
        client_id: The sender.
        cipher_key: Public key for the share-encryption key agreement.
        mask_key: Public key for the pairwise-mask key agreement.
    """

    client_id: int
    cipher_key: bytes
    mask_key: bytes

    def wire_bytes(self) -> int:
        """Payload bytes."""
        return _ID + 2 * KEY_BYTES

    def to_bytes(self) -> bytes:
        """Packed: id, cipher key, mask key."""
        return _u32s(self.client_id) + self.cipher_key + self.mask_key

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKeys:
        """Read :meth:`to_bytes`' output (ValueError when malformed)."""
        r = _Reader(data, "public-keys")
        out = cls(r.u32(), r.take(KEY_BYTES), r.take(KEY_BYTES))
        r.done()
        return out


@dataclass(frozen=True)
class NeighbourKeys:
    """``↓`` Stage 2: the public keys of the client's neighbours that advertised theirs.

    Attributes:
        client_id: The receiving client.
        keys: ``neighbour → (cipher_key, mask_key)``.
    """

    client_id: int
    keys: Mapping[int, tuple[bytes, bytes]]

    def wire_bytes(self) -> int:
        """Payload bytes."""
        return _ID + len(self.keys) * (_ID + 2 * KEY_BYTES)

    def to_bytes(self) -> bytes:
        """Packed: id, then (neighbour, cipher key, mask key) per neighbour."""
        parts = [_u32s(self.client_id)]
        for peer, (cipher, mask) in sorted(self.keys.items()):
            parts += [_u32s(peer), cipher, mask]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> NeighbourKeys:
        """Read :meth:`to_bytes`' output (ValueError when malformed)."""
        r = _Reader(data, "neighbour-keys")
        client_id, keys = r.u32(), {}
        while r.left():
            peer = r.u32()
            keys[peer] = (r.take(KEY_BYTES), r.take(KEY_BYTES))
        return cls(client_id, keys)


@dataclass(frozen=True)
class _CiphertextBundle:
    """AES-GCM ciphertexts keyed by the other end's id (the wire shape of stages 2 and 3).

    Attributes:
        client_id: The client the bundle belongs to (sender in stage 2, receiver in stage 3).
        ciphertexts: ``other client → ciphertext``.
    """

    client_id: int
    ciphertexts: Mapping[int, bytes]

    _LABEL: ClassVar[str] = "ciphertexts"

    def wire_bytes(self) -> int:
        """Payload bytes."""
        return _ID + sum(_ID + 4 + len(c) for c in self.ciphertexts.values())

    def to_bytes(self) -> bytes:
        """Packed: id, then (other id, length, ciphertext) per entry."""
        return _pack_ciphertexts(self.client_id, self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Read :meth:`to_bytes`' output (ValueError when malformed)."""
        return cls(*_read_ciphertexts(data, cls._LABEL))


@dataclass(frozen=True)
class EncryptedShares(_CiphertextBundle):
    """``↑`` Stage 2: one AES-GCM ciphertext per neighbour, each holding that neighbour's Shamir
    share of the sender's self-mask seed and of its mask private key.

    Attributes:
        client_id: The sender.
        ciphertexts: ``receiver → ciphertext``.
    """

    _LABEL: ClassVar[str] = "encrypted-shares"


@dataclass(frozen=True)
class ShareDelivery(_CiphertextBundle):
    """``↓`` Stage 3: the ciphertexts addressed to the client, by sender.

    Attributes:
        client_id: The receiving client.
        ciphertexts: ``sender → ciphertext``.
    """

    _LABEL: ClassVar[str] = "share-delivery"


@dataclass(frozen=True)
class MaskedInput:
    """``↑`` Stage 3: the update plus the self mask and the pairwise masks, in Z_{2^b}.

    Attributes:
        client_id: The sender.
        vector: d ring elements (uint64).
        modulus_bits: b.
    """

    client_id: int
    vector: np.ndarray
    modulus_bits: int

    def wire_bytes(self) -> int:
        """Payload bytes."""
        return _ID + int(self.vector.shape[0]) * math.ceil(self.modulus_bits / 8)

    def to_bytes(self) -> bytes:
        """Packed: id, then each element's low ⌈b/8⌉ bytes, little-endian."""
        width = math.ceil(self.modulus_bits / 8)
        words = np.ascontiguousarray(self.vector, dtype="<u8").view(np.uint8).reshape(-1, 8)
        return _u32s(self.client_id) + words[:, :width].tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, modulus_bits: int) -> MaskedInput:
        """Read :meth:`to_bytes`' output for the round's ``modulus_bits`` (ValueError when
        malformed)."""
        width = math.ceil(modulus_bits / 8)
        r = _Reader(data, "masked-input")
        client_id = r.u32()
        if r.left() % width:
            raise ValueError("malformed masked-input message")
        raw = np.frombuffer(r.take(r.left()), dtype=np.uint8).reshape(-1, width)
        words = np.zeros((raw.shape[0], 8), dtype=np.uint8)
        words[:, :width] = raw
        vector = words.reshape(-1).view("<u8").astype(np.uint64)
        if (vector >> np.uint64(modulus_bits)).any():
            raise ValueError(f"masked-input elements outside Z_2^{modulus_bits}")
        return cls(client_id, vector, modulus_bits)


@dataclass(frozen=True)
class UnmaskRequest:
    """``↓`` Stage 4: which shares the server asks the client for.

    For a surviving peer the server needs the share of its *self-mask seed*; for a peer that
    dropped after sharing, the share of its *mask private key*. Never both for one peer: that
    would let the server strip every mask from the peer's input.

    Attributes:
        client_id: The receiving client.
        n_survivors: How many clients' inputs the server will unmask.
        self_mask_of: Peers whose self-mask-seed share is asked for.
        pairwise_key_of: Peers whose mask-private-key share is asked for.
    """

    client_id: int
    n_survivors: int
    self_mask_of: tuple[int, ...]
    pairwise_key_of: tuple[int, ...]

    def wire_bytes(self) -> int:
        """Payload bytes."""
        return _ID * (2 + 2 + len(self.self_mask_of) + len(self.pairwise_key_of))

    def to_bytes(self) -> bytes:
        """Packed: id, survivors, the two counts, then both lists of peers."""
        return _u32s(
            self.client_id,
            self.n_survivors,
            len(self.self_mask_of),
            len(self.pairwise_key_of),
            *self.self_mask_of,
            *self.pairwise_key_of,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskRequest:
        """Read :meth:`to_bytes`' output (ValueError when malformed)."""
        r = _Reader(data, "unmask-request")
        client_id, survivors, seeds, keys = r.u32(), r.u32(), r.u32(), r.u32()
        out = cls(
            client_id,
            survivors,
            tuple(r.u32() for _ in range(seeds)),
            tuple(r.u32() for _ in range(keys)),
        )
        r.done()
        return out


@dataclass(frozen=True)
class UnmaskResponse:
    """``↑`` Stage 4: the shares asked for.

    Attributes:
        client_id: The sender (the shares' holder; its index is ``client_id + 1``).
        self_mask_shares: ``peer → share`` of the peer's self-mask seed.
        pairwise_key_shares: ``peer → share`` of the peer's mask private key.
    """

    client_id: int
    self_mask_shares: Mapping[int, int]
    pairwise_key_shares: Mapping[int, int]

    def wire_bytes(self) -> int:
        """Payload bytes."""
        count = len(self.self_mask_shares) + len(self.pairwise_key_shares)
        return _ID + 2 * 4 + count * (_ID + SHARE_BYTES)

    def to_bytes(self) -> bytes:
        """Packed: id, the two counts, then (peer, share) of each kind."""
        parts = [_u32s(self.client_id, len(self.self_mask_shares), len(self.pairwise_key_shares))]
        for shares in (self.self_mask_shares, self.pairwise_key_shares):
            for peer, y in sorted(shares.items()):
                parts += [_u32s(peer), y.to_bytes(SHARE_BYTES, "big")]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskResponse:
        """Read :meth:`to_bytes`' output (ValueError when malformed)."""
        r = _Reader(data, "unmask-response")
        client_id, seeds, keys = r.u32(), r.u32(), r.u32()
        kinds: list[dict[int, int]] = []
        for count in (seeds, keys):
            kinds.append(
                {r.u32(): int.from_bytes(r.take(SHARE_BYTES), "big") for _ in range(count)}
            )
        r.done()
        return cls(client_id, kinds[0], kinds[1])
