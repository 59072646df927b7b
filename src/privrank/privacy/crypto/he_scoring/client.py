"""The client's side of encrypted scoring: keys, encryption of the user vector, decryption.

The secret key never leaves this object; only Galois keys (which let the server rotate, not
decrypt) and the ciphertext of the tiled user vector are sent. Decrypted scores stay with the
caller: never send them to the server (CKKS decryptions leak the secret key).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from privrank.errors import ConfigError, DataError
from privrank.privacy.crypto.he_scoring import _seal
from privrank.privacy.crypto.he_scoring.protocol import HEParams, ScoreRequest, ScoreResponse

__all__ = ["HEClient"]


class HEClient:
    """A CKKS key pair for the published parameters, and the client's protocol steps.

    Args:
        params: The server's :class:`HEParams` (``GET /v1/he/params``).

    Attributes:
        params: The parameters.
    """

    def __init__(self, params: HEParams) -> None:
        api = _seal.sealapi()
        self.params = params
        ctx = _seal.context(params)
        keygen = api.KeyGenerator(ctx)
        self._secret = keygen.secret_key()
        # Seeded ("serialisable") keys: half the bytes of expanded ones.
        self._galois = _seal.dump(keygen.create_galois_keys(_seal.galois_elements(params)))
        self._encoder = api.CKKSEncoder(ctx)
        self._encryptor = api.Encryptor(ctx, self._secret)
        self._decryptor = api.Decryptor(ctx, self._secret)

    def request(self, user_vector: np.ndarray, candidates: Sequence[str] | None = None) -> bytes:
        """The request body for one user vector (``d`` floats, finite).

        Raises:
            ConfigError: A vector of the wrong length or with non-finite values.
        """
        vector = np.asarray(user_vector, dtype=np.float64)
        params = self.params
        if vector.shape != (params.factors,) or not np.isfinite(vector).all():
            raise ConfigError(
                f"HEClient.request: the user vector must be {params.factors} finite floats; got "
                f"shape {vector.shape}"
            )
        padded = np.zeros(params.dim)
        padded[: params.factors] = vector
        tiled = np.tile(padded, params.slots // params.dim)
        api = _seal.sealapi()
        plain = api.Plaintext()
        self._encoder.encode(tiled.tolist(), 2.0**params.scale_bits, plain)
        ciphertext = self._encryptor.encrypt_symmetric(plain)  # seeded: half the bytes
        return ScoreRequest(
            galois_keys=self._galois,
            ciphertext=_seal.dump(ciphertext),
            candidates=None if candidates is None else [str(c) for c in candidates],
        ).to_bytes()

    def decrypt(self, response: ScoreResponse) -> tuple[list[str], np.ndarray]:
        """The scored item ids and their scores (float64), in the response's order.

        Raises:
            DataError: A ciphertext that does not load under the parameters.
        """
        api = _seal.sealapi()
        scores = []
        for data in response.ciphertexts:
            ciphertext = _seal.load_ciphertext(self.params, data, what="score ciphertext")
            plain = api.Plaintext()
            self._decryptor.decrypt(ciphertext, plain)
            scores.append(np.asarray(self._encoder.decode_double(plain)))
        flat = np.concatenate(scores)[: len(response.item_ids)] if scores else np.zeros(0)
        if len(flat) != len(response.item_ids):
            raise DataError("encrypted scoring response: fewer scores than items")
        return response.item_ids, flat

    @staticmethod
    def top_k(item_ids: list[str], scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` best items (ties by position), on the client."""
        if k < 1:
            raise ConfigError(f"top_k: k must be ≥ 1; got {k}")
        order = np.lexsort((np.arange(len(scores)), -scores))[: min(k, len(scores))]
        return [(item_ids[i], float(scores[i])) for i in order]

    @property
    def upload_bytes(self) -> int:
        """Bytes of the Galois keys in every request."""
        return len(self._galois)
