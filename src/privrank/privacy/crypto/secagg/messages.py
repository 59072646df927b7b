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

:meth:`wire_bytes` of each message is its size in a packed encoding: client ids as 4 bytes,
keys 32, Shamir shares 66, ciphertexts as they are (with a 4-byte length), a vector of d ring
elements as ``d · ⌈b/8⌉`` bytes. It counts payload, not the transport's framing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class EncryptedShares:
    """``↑`` Stage 2: one AES-GCM ciphertext per neighbour, each holding that neighbour's Shamir
    share of the sender's self-mask seed and of its mask private key.

    Attributes:
        client_id: The sender.
        ciphertexts: ``receiver → ciphertext``.
    """

    client_id: int
    ciphertexts: Mapping[int, bytes]

    def wire_bytes(self) -> int:
        """Payload bytes."""
        return _ID + sum(_ID + 4 + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True)
class ShareDelivery:
    """``↓`` Stage 3: the ciphertexts addressed to the client, by sender.

    Attributes:
        client_id: The receiving client.
        ciphertexts: ``sender → ciphertext``.
    """

    client_id: int
    ciphertexts: Mapping[int, bytes]

    def wire_bytes(self) -> int:
        """Payload bytes."""
        return _ID + sum(_ID + 4 + len(c) for c in self.ciphertexts.values())


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
