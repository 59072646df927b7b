"""The server's side of encrypted scoring: score a catalogue under CKKS, never decrypting.

See :mod:`privrank.privacy.crypto.he_scoring.protocol` for the packing, the parameters and
who is trusted for what. The server holds no secret key and cannot decrypt anything it
computes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from privrank.errors import ConfigError, DataError
from privrank.privacy.crypto.he_scoring import _seal
from privrank.privacy.crypto.he_scoring.protocol import HEParams, ScoreRequest, ScoreResponse

__all__ = ["EncryptedScorer"]


class EncryptedScorer:
    """Scores ``s_i = h_i · u + b_i`` of a catalogue for an encrypted ``u``.

    The plaintext diagonals of the whole catalogue are encoded once (lazily, then cached:
    ``blocks · D`` plaintexts, about 25 MiB for 10,000 items and D = 64); a candidate set is
    encoded per request.

    Args:
        item_ids: The catalogue's item ids (row order of ``item_vectors``).
        item_vectors: ``H``, ``(n_items, d)``.
        item_biases: ``b``, ``(n_items,)`` or ``None``.
        poly_modulus_degree: ``N`` (8192 or 16384).

    Raises:
        ConfigError: Shapes disagree, or non-finite values.
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        item_vectors: np.ndarray,
        item_biases: np.ndarray | None = None,
        *,
        poly_modulus_degree: int = 8192,
    ) -> None:
        vectors = np.asarray(item_vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[0] != len(item_ids) or vectors.shape[0] == 0:
            raise ConfigError(
                f"EncryptedScorer: item_vectors must be (n_items={len(item_ids)}, d); got "
                f"{vectors.shape}"
            )
        biases = None if item_biases is None else np.asarray(item_biases, dtype=np.float64)
        if biases is not None and biases.shape != (len(item_ids),):
            raise ConfigError(f"EncryptedScorer: item_biases must be ({len(item_ids)},)")
        if not np.isfinite(vectors).all() or (biases is not None and not np.isfinite(biases).all()):
            raise ConfigError("EncryptedScorer: item vectors and biases must be finite")
        self.item_ids = [str(i) for i in item_ids]
        self._codes = {item: code for code, item in enumerate(self.item_ids)}
        self.vectors = vectors
        self.biases = biases
        self.params = HEParams.for_model(vectors.shape[1], len(self.item_ids), poly_modulus_degree)
        self._catalogue: list[list[list[Any]]] | None = None
        self._lock = threading.Lock()

    # -- encoding -----------------------------------------------------------------------------
    def _encode_blocks(self, codes: np.ndarray) -> list[list[list[Any]]]:
        """``P[block][j][i]``: the diagonal ``g·j + i`` of the block, rotated by ``−g·j``
        (``None`` where it is all zeros: SEAL refuses products that are exactly zero)."""
        api = _seal.sealapi()
        params = self.params
        ctx = _seal.context(params)
        encoder = api.CKKSEncoder(ctx)
        parms_id = ctx.first_parms_id()
        scale = 2.0**params.scale_bits
        slots, dim, g = params.slots, params.dim, params.giant_step
        t = np.arange(slots)
        blocks = []
        for start in range(0, len(codes), slots):
            block = np.zeros((slots, dim))
            rows = codes[start : start + slots]
            block[: len(rows), : self.vectors.shape[1]] = self.vectors[rows]
            giant = []
            for j in range(dim // g):
                baby: list[Any] = []
                for i in range(g):
                    diag = np.roll(block[t, (t + g * j + i) % dim], g * j)
                    if not diag.any():
                        baby.append(None)
                        continue
                    plain = api.Plaintext()
                    encoder.encode(diag.tolist(), parms_id, scale, plain)
                    baby.append(plain)
                giant.append(baby)
            blocks.append(giant)
        return blocks

    def _catalogue_blocks(self) -> list[list[list[Any]]]:
        with self._lock:
            if self._catalogue is None:
                self._catalogue = self._encode_blocks(np.arange(len(self.item_ids)))
            return self._catalogue

    def warm_up(self) -> None:
        """Encode the catalogue's diagonals now (else the first request does)."""
        self._catalogue_blocks()

    # -- scoring ------------------------------------------------------------------------------
    def _check_ciphertext(self, ciphertext: Any) -> None:
        """What SEAL's ``load`` does not check and the evaluation needs: two polynomials, NTT
        form (SEAL loads a CKKS ciphertext that is not, then fails to rotate it), not
        transparent (``c1 = 0``: SEAL refuses to compute on it), the first level, the scale."""
        params = self.params
        ctx = _seal.context(params)
        if ciphertext.size() != 2:
            raise DataError(
                f"encrypted scoring request: a fresh ciphertext has 2 polynomials; got "
                f"{ciphertext.size()}"
            )
        if not ciphertext.is_ntt_form():
            raise DataError(
                "encrypted scoring request: the ciphertext is not in NTT form (a CKKS "
                "ciphertext made by SEAL always is)"
            )
        if ciphertext.is_transparent():
            raise DataError(
                "encrypted scoring request: the ciphertext is transparent (its second "
                "polynomial is zero: it encrypts nothing)"
            )
        if ciphertext.parms_id() != ctx.first_parms_id():
            raise DataError(
                "encrypted scoring request: the ciphertext is not at the first level of the "
                "parameters (encrypt it fresh with the published parameters)"
            )
        if not math.isclose(math.log2(ciphertext.scale), params.scale_bits, abs_tol=1e-6):
            raise DataError(
                f"encrypted scoring request: ciphertext scale 2^{math.log2(ciphertext.scale):.3g}"
                f"; expected 2^{params.scale_bits}"
            )

    def score(self, request: ScoreRequest) -> ScoreResponse:
        """The encrypted scores of the catalogue (or of ``request.candidates``).

        Raises:
            DataError: Invalid keys or ciphertext, unknown or repeated candidates.
        """
        params = self.params
        if request.candidates is None:
            item_ids = self.item_ids
            blocks = self._catalogue_blocks()
            codes = None
        else:
            codes_list = [self._codes.get(c, -1) for c in request.candidates]
            unknown = sum(1 for c in codes_list if c < 0)
            if unknown:
                raise DataError(
                    f"encrypted scoring request: {unknown} of {len(codes_list)} candidate ids "
                    "are not in the served catalogue"
                )
            if len(set(codes_list)) != len(codes_list):
                raise DataError("encrypted scoring request: candidate ids repeat")
            codes = np.asarray(codes_list, dtype=np.int64)
            item_ids = list(request.candidates)
            blocks = self._encode_blocks(codes)
        keys = _seal.load_galois_keys(params, request.galois_keys)
        ciphertext = _seal.load_ciphertext(params, request.ciphertext)
        self._check_ciphertext(ciphertext)
        try:
            outputs = self._evaluate(ciphertext, keys, blocks, codes)
        except DataError:
            raise
        except (RuntimeError, ValueError) as exc:  # SEAL's refusals, translated at the edge
            raise DataError(
                f"encrypted scoring request: SEAL refused to evaluate the ciphertext: {exc}"
            ) from exc
        return ScoreResponse(
            item_ids=item_ids,
            ciphertexts=[_seal.dump(c) for c in outputs],
            slots=params.slots,
        )

    def _evaluate(
        self, ciphertext: Any, keys: Any, blocks: list[list[list[Any]]], codes: np.ndarray | None
    ) -> list[Any]:
        api = _seal.sealapi()
        params = self.params
        ctx = _seal.context(params)
        evaluator = api.Evaluator(ctx)
        g = params.giant_step
        baby = [ciphertext]
        for _ in range(1, g):
            rotated = api.Ciphertext()
            evaluator.rotate_vector(baby[-1], 1, keys, rotated)
            baby.append(rotated)
        outputs = []
        for b, giant in enumerate(blocks):
            result = None
            for j in reversed(range(len(giant))):
                inner = None
                for i, plain in enumerate(giant[j]):
                    if plain is None:
                        continue
                    product = api.Ciphertext()
                    evaluator.multiply_plain(baby[i], plain, product)
                    if inner is None:
                        inner = product
                    else:
                        evaluator.add_inplace(inner, product)
                if result is None:
                    result = inner
                elif inner is not None:
                    evaluator.rotate_vector_inplace(result, g, keys)
                    evaluator.add_inplace(result, inner)
                else:
                    evaluator.rotate_vector_inplace(result, g, keys)
            if result is None:
                raise DataError("encrypted scoring: every item vector of a block is zero")
            evaluator.rescale_to_next_inplace(result)
            self._add_biases(result, b, codes, evaluator)
            outputs.append(result)
        return outputs

    def _add_biases(
        self, result: Any, block: int, codes: np.ndarray | None, evaluator: Any
    ) -> None:
        if self.biases is None:
            return
        api = _seal.sealapi()
        params = self.params
        slots = params.slots
        chosen = (np.arange(len(self.item_ids)) if codes is None else codes)[
            block * slots : (block + 1) * slots
        ]
        values = np.zeros(slots)
        values[: len(chosen)] = self.biases[chosen]
        if not values.any():
            return
        encoder = api.CKKSEncoder(_seal.context(params))
        plain = api.Plaintext()
        encoder.encode(values.tolist(), result.parms_id(), result.scale, plain)
        evaluator.add_plain_inplace(result, plain)
