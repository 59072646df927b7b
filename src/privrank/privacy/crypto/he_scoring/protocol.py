r"""The encrypted-scoring protocol: parameters, wire format, and the guarantee.

**What is computed.** A factor model scores item ``i`` for a user vector ``u ∈ R^d`` as
``s_i = h_i · u + b_i``. The client holds ``u``; the server holds the item vectors ``H`` and
biases ``b``. The client encrypts ``u`` under CKKS (Cheon, Kim, Kim & Song 2017; Microsoft SEAL
through TenSEAL's ``sealapi``), the server computes the encrypted scores of every item of its
catalogue (or of a candidate set) without decrypting anything, and the client decrypts and
ranks.

**Packing** (Halevi–Shoup diagonals with baby-step/giant-step rotations). With ``S = N/2``
slots (``N`` the ring degree) and ``d`` padded to a power of two ``D ≤ S``, the client encrypts
``ũ``: ``u`` tiled ``S/D`` times. A block of ``S`` items is scored as

.. math:: s[t] = \sum_{f=0}^{D-1} \mathrm{diag}_f[t]\; \tilde u[t + f],\qquad
          \mathrm{diag}_f[t] = H[t, (t+f) \bmod D],

and with ``f = g j + i`` (baby steps ``i < g``, giant steps ``j < D/g``):
``s = Σ_j rot(Σ_i rot(diag_{gj+i}, −gj) ⊙ rot(ũ, i), gj)``, evaluated by Horner in ``j``. The
baby rotations of ``ũ`` are shared by all blocks: a request costs ``g − 1`` rotations by one
slot, ``blocks · (D/g − 1)`` rotations by ``g`` slots, ``blocks · D`` plaintext products, and
one rescale per block. The client uploads Galois keys for exactly the two steps 1 and ``g``.

**Parameters** (:class:`HEParams`): ``N = 8192``, coefficient modulus 60 + 40 + 60 bits (160
bits ≤ 218, the HE standard's bound for 128-bit security at ``N = 8192``; SEAL enforces
``sec_level_type.tc128``), scale ``2^40``. A score keeps about 20 bits of precision after the
one rescale: the largest absolute error measured on 10,000 scores of order 1 was 3.5e-7
(``bench/bench_he.py``); the tests assert ``1e-4 · max(1, max |s|)``.

**Wire format.** A request is one binary body (``application/octet-stream``; see
:class:`ScoreRequest`): a magic, a small JSON header (candidate item ids or none), the Galois
keys and the ciphertext, each as SEAL's own serialisation (compressed, with SEAL's header,
validated by SEAL against the parameters on load). A response (:class:`ScoreResponse`) is JSON:
the item ids in slot order and the score ciphertexts (base64).

**Who is trusted for what.**

- *The user vector* is hidden from the server (and the network) by CKKS's semantic security
  (IND-CPA under the Ring-LWE assumption): the server sees only a ciphertext and Galois keys,
  and is trusted for nothing about ``u``. The client must never show decrypted values to the
  server: CKKS decryptions leak the secret key (Li & Micciancio 2021), so the client helper
  keeps scores on the client.
- *The server learns* that this credential asked, when, and which catalogue or candidate set
  was scored (the candidate ids travel in clear); not the scores or the ranking.
- *The client learns* the exact scores ``h_i · u + b_i`` of every scored item, for its own
  ``u``. That is more than a top-k list: with ``d + 1`` chosen vectors (e.g. the basis vectors)
  a client recovers every scored item's vector and bias, i.e. the whole item side of the model.
  So encrypted scoring protects the user from the server, not the model from the user: serve
  only a model whose item side may be published (e.g. a DP release, whose item side is
  (ε, δ)-DP), or to clients trusted with it. It adds no privacy loss to training users
  beyond what publishing the item side costs.
- *Integrity* is not protected: a malicious server can return any ciphertexts (wrong scores);
  CKKS gives confidentiality only.

**What the server guarantees about the bytes it is sent.** A malformed or tampered request is
refused with a :class:`~privrank.errors.DataError` (HTTP 422) that names what is wrong, and never
crashes the server or raises anything else: SEAL's 16-byte header is compared field by field with
what this build writes (so any change of a header byte is refused, including the two reserved
bytes that SEAL's own loader ignores); SEAL then checks sizes, the parameter id and every
coefficient's range; the server then checks what SEAL's loader does not and the evaluation needs
(two polynomials, NTT form, not transparent, first level, the scale); any refusal SEAL raises
during evaluation is translated too. What it cannot guarantee: a CKKS ciphertext is malleable by
design, so a changed payload byte that keeps SEAL's data well formed is the encryption of another
vector, and the server scores it; only the key holder could tell. That is not a hole in this
protocol: the only party hurt is the client, who alone can make or read such a ciphertext. A MAC
or AEAD over the ciphertext would add nothing here: its key would be shared with the sender, who
is the one party able to tamper usefully, and a third party on the wire is kept out by TLS and
the bearer credential. Tests flip every bit of every header byte of the ciphertext and the keys.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from privrank.data._config import FrozenConfig
from privrank.errors import DataError

__all__ = ["MAGIC", "HEParams", "ScoreRequest", "ScoreResponse", "giant_step"]

MAGIC = b"PRHE1\n"
_U32 = struct.Struct("<I")
#: The most candidate ids one request may carry (the header must stay small).
MAX_CANDIDATES = 4096
#: The largest header a request may carry (bytes).
MAX_HEADER_BYTES = 128 * 1024


def giant_step(dim: int, blocks: int) -> int:
    """The giant step ``g`` (a power of two ≤ ``dim``) minimising the rotations
    ``(g − 1) + blocks · (dim/g − 1)`` of a request."""
    best, cost = 1, math.inf
    g = 1
    while g <= dim:
        c = (g - 1) + blocks * (dim // g - 1)
        if c < cost:
            best, cost = g, c
        g *= 2
    return best


class HEParams(FrozenConfig):
    """The public parameters of encrypted scoring (published by the server, used by clients).

    Attributes:
        poly_modulus_degree: ``N``, the ring degree (``S = N/2`` slots).
        coeff_modulus_bits: Bit sizes of the coefficient modulus primes (the last is the
            special prime of key switching).
        scale_bits: ``log2`` of the CKKS scale.
        dim: ``D``: the model's factor dimension padded to a power of two (≤ ``S``).
        factors: ``d``, the model's factor dimension.
        giant_step: ``g``: Galois keys are needed for rotations by 1 and by ``g``.
    """

    poly_modulus_degree: int = Field(default=8192)
    coeff_modulus_bits: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = Field(default=40, ge=20, le=60)
    dim: int = Field(ge=1)
    factors: int = Field(ge=1)
    giant_step: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> HEParams:
        if self.poly_modulus_degree not in (8192, 16384):
            raise ValueError("poly_modulus_degree must be 8192 or 16384")
        if self.dim & (self.dim - 1) or self.dim > self.slots or self.factors > self.dim:
            raise ValueError(
                f"dim must be a power of two ≥ factors ({self.factors}) and ≤ the "
                f"{self.slots} slots; got {self.dim}"
            )
        if self.giant_step & (self.giant_step - 1) or self.giant_step > self.dim:
            raise ValueError(f"giant_step must be a power of two ≤ dim; got {self.giant_step}")
        return self

    @property
    def slots(self) -> int:
        """``S = N/2``: scores per ciphertext."""
        return self.poly_modulus_degree // 2

    @classmethod
    def for_model(cls, factors: int, n_items: int, poly_modulus_degree: int = 8192) -> HEParams:
        """Parameters for a catalogue of ``n_items`` and ``factors``-dimensional vectors."""
        dim = 1 << max(0, math.ceil(math.log2(factors)))
        slots = poly_modulus_degree // 2
        blocks = max(1, math.ceil(n_items / slots))
        return cls(
            poly_modulus_degree=poly_modulus_degree,
            dim=dim,
            factors=factors,
            giant_step=giant_step(dim, blocks),
        )


def _frame(parts: list[bytes]) -> bytes:
    return b"".join(_U32.pack(len(p)) + p for p in parts)


@dataclass(frozen=True)
class ScoreRequest:
    """A scoring request: Galois keys, the encrypted (tiled) user vector, candidates.

    Attributes:
        galois_keys: SEAL-serialised Galois keys (steps 1 and ``g``).
        ciphertext: SEAL-serialised encryption of ``ũ``.
        candidates: Item ids to score (``None``: the whole catalogue).
    """

    galois_keys: bytes
    ciphertext: bytes
    candidates: list[str] | None = None

    def to_bytes(self) -> bytes:
        """The request body."""
        header = json.dumps({"candidates": self.candidates}).encode("utf-8")
        return MAGIC + _frame([header, self.galois_keys, self.ciphertext])

    @classmethod
    def from_bytes(cls, body: bytes) -> ScoreRequest:
        """Parse a request body.

        Raises:
            DataError: Not this format: wrong magic, truncated or oversized parts, a header
                that is not the expected JSON, candidates that are not a list of ids.
        """
        if not body.startswith(MAGIC):
            raise DataError(
                "encrypted scoring request: the body does not start with the format's magic "
                f"{MAGIC!r}; expected a body made by privrank's HE client"
            )
        parts: list[bytes] = []
        at = len(MAGIC)
        for name in ("header", "galois keys", "ciphertext"):
            if at + 4 > len(body):
                raise DataError(f"encrypted scoring request: truncated before the {name}")
            (size,) = _U32.unpack_from(body, at)
            at += 4
            if at + size > len(body):
                raise DataError(
                    f"encrypted scoring request: the {name} declares {size} bytes; "
                    f"{len(body) - at} remain"
                )
            parts.append(body[at : at + size])
            at += size
        if at != len(body):
            raise DataError(f"encrypted scoring request: {len(body) - at} trailing bytes")
        header_bytes, keys, ciphertext = parts
        if len(header_bytes) > MAX_HEADER_BYTES:
            raise DataError(
                f"encrypted scoring request: header of {len(header_bytes)} bytes; the most is "
                f"{MAX_HEADER_BYTES}"
            )
        try:
            header = json.loads(header_bytes)
        except ValueError as exc:
            raise DataError(f"encrypted scoring request: header is not JSON ({exc})") from exc
        if not isinstance(header, dict) or set(header) != {"candidates"}:
            raise DataError(
                'encrypted scoring request: header must be {"candidates": [ids] or null}'
            )
        candidates = header["candidates"]
        if candidates is not None:
            if not isinstance(candidates, list) or not all(
                isinstance(c, str) and 0 < len(c) <= 256 for c in candidates
            ):
                raise DataError(
                    "encrypted scoring request: candidates must be a list of item id strings"
                )
            if not 0 < len(candidates) <= MAX_CANDIDATES:
                raise DataError(
                    f"encrypted scoring request: {len(candidates)} candidates; expected 1 to "
                    f"{MAX_CANDIDATES}"
                )
        return cls(galois_keys=keys, ciphertext=ciphertext, candidates=candidates)


@dataclass(frozen=True)
class ScoreResponse:
    """The encrypted scores: ``ciphertexts[b]`` holds the scores of ``item_ids[b·S:(b+1)·S]``
    in its first slots.

    Attributes:
        item_ids: The scored items, in slot order.
        ciphertexts: SEAL-serialised score ciphertexts, one per block of ``S`` items.
        slots: ``S``.
    """

    item_ids: list[str]
    ciphertexts: list[bytes]
    slots: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON body (ciphertexts base64)."""
        import base64

        return {
            "item_ids": self.item_ids,
            "ciphertexts": [base64.b64encode(c).decode("ascii") for c in self.ciphertexts],
            "slots": self.slots,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreResponse:
        """Parse :meth:`to_json`'s output.

        Raises:
            DataError: Missing or malformed fields.
        """
        import base64
        import binascii

        try:
            ids = [str(i) for i in data["item_ids"]]
            cts = [base64.b64decode(c, validate=True) for c in data["ciphertexts"]]
            slots = int(data["slots"])
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise DataError(f"encrypted scoring response: malformed ({exc})") from exc
        if len(cts) != max(1, math.ceil(len(ids) / slots)):
            raise DataError("encrypted scoring response: ciphertexts do not cover the items")
        extra = {k: v for k, v in data.items() if k not in ("item_ids", "ciphertexts", "slots")}
        return cls(item_ids=ids, ciphertexts=cts, slots=slots, extra=extra)
