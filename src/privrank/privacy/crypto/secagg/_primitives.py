"""The cryptographic primitives of SecAgg+, all from ``cryptography`` (no cipher is written here).

- **Key agreement**: X25519 (RFC 7748) Diffie–Hellman, the shared secret then passed through
  HKDF-SHA256 (RFC 5869) with a context string (``info``) naming the round and the purpose, so
  that the share-encryption key and the mask seed of a pair of clients are independent.
- **Authenticated encryption** of Shamir shares between two clients through the server:
  AES-256-GCM with a fresh random 96-bit nonce and the (sender, receiver, round) as associated
  data, so the server can neither read, alter nor re-route a share.
- **PRG**: a 32-byte seed expands to a mask by AES-256-CTR keyed with the seed (zero nonce: each
  seed is used for one expansion only, since seeds are derived per round), read as little-endian
  64-bit words reduced modulo the ring's power-of-two modulus, which keeps them uniform.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "agree",
    "decrypt",
    "encrypt",
    "expand_mask",
    "new_private_key",
    "private_bytes",
    "private_key_from_bytes",
    "public_bytes",
]

#: Bytes of an X25519 key, a derived key and a seed.
KEY_BYTES = 32
#: AES-GCM nonce and tag bytes.
NONCE_BYTES = 12
TAG_BYTES = 16


def new_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key (from the OS's secure source)."""
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key``'s public key."""
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key`` (what a client Shamir-shares for dropout recovery)."""
    return key.private_bytes_raw()


def private_key_from_bytes(raw: bytes) -> X25519PrivateKey:
    """The private key of 32 raw bytes (a key the server recovered from shares)."""
    return X25519PrivateKey.from_private_bytes(raw)


def agree(key: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte key shared by the two ends: HKDF-SHA256(X25519(key, peer), info).

    Raises:
        ValueError: ``peer_public`` is not a valid X25519 public key (e.g. all zeros).
    """
    secret = key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM: ``nonce || ciphertext || tag``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, message: bytes, associated: bytes) -> bytes | None:
    """The plaintext of :func:`encrypt`'s output, or ``None`` when it fails authentication."""
    try:
        return AESGCM(key).decrypt(message[:NONCE_BYTES], message[NONCE_BYTES:], associated)
    except InvalidTag:
        return None


def expand_mask(seed: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """``length`` pseudo-random elements of Z_{2^modulus_bits} (uint64) from a 32-byte seed.

    AES-256-CTR keyed with ``seed`` encrypts zeros; each 8-byte little-endian word, masked to
    its low ``modulus_bits`` bits, is one element (uniform, since the modulus is a power of 2).
    """
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(b"\0" * 16)).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    words = np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=False)
    if modulus_bits < 64:
        words = words & np.uint64((1 << modulus_bits) - 1)
    return words
