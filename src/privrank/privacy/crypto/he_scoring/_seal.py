"""SEAL (through TenSEAL's ``sealapi``) for the protocol: context, (de)serialisation.

``sealapi`` objects serialise to and from files only, so bytes pass through a private temporary
directory. Loading validates the data against the parameters (SEAL's ``load`` checks sizes,
moduli and the parameter id); any failure becomes a :class:`~privrank.errors.DataError`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any

from privrank.errors import ConfigError, DataError
from privrank.privacy.crypto.he_scoring.protocol import HEParams

__all__ = ["context", "dump", "galois_elements", "load_ciphertext", "load_galois_keys", "sealapi"]


def sealapi() -> Any:
    """TenSEAL's SEAL bindings (``pip install 'privrank[he]'``)."""
    try:
        from tenseal import sealapi as api
    except ImportError as exc:  # pragma: no cover - the extra is installed in dev
        raise ConfigError("encrypted scoring needs TenSEAL: pip install 'privrank[he]'") from exc
    return api


@functools.lru_cache(maxsize=8)
def _context(degree: int, bits: tuple[int, ...]) -> Any:
    api = sealapi()
    parms = api.EncryptionParameters(api.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(degree)
    parms.set_coeff_modulus(api.CoeffModulus.Create(degree, list(bits)))
    ctx = api.SEALContext(parms, True, api.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise ConfigError(
            f"CKKS parameters N={degree}, moduli {bits} are not valid at 128-bit security: "
            f"{ctx.parameter_error_message()}"
        )
    return ctx


def context(params: HEParams) -> Any:
    """The SEAL context of ``params`` (128-bit security enforced by SEAL)."""
    return _context(params.poly_modulus_degree, tuple(params.coeff_modulus_bits))


def galois_elements(params: HEParams) -> list[int]:
    """The Galois elements of the rotations the protocol uses (by 1 and by ``g``)."""
    tool = context(params).key_context_data().galois_tool()
    steps = sorted({1, params.giant_step})
    return [int(tool.get_elt_from_step(s)) for s in steps]


def dump(obj: Any) -> bytes:
    """SEAL's serialisation of a key, ciphertext or serialisable object."""
    with tempfile.TemporaryDirectory(prefix="privrank-he-") as tmp:
        path = os.path.join(tmp, "obj")
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def _load(obj: Any, params: HEParams, data: bytes, what: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="privrank-he-") as tmp:
        path = os.path.join(tmp, "obj")
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            obj.load(context(params), path)
        except Exception as exc:  # SEAL raises ValueError/RuntimeError/std exceptions
            raise DataError(
                f"encrypted scoring request: the {what} is not a valid SEAL object for these "
                f"parameters (N={params.poly_modulus_degree}, moduli "
                f"{list(params.coeff_modulus_bits)}): {exc}"
            ) from exc
    return obj


def load_ciphertext(params: HEParams, data: bytes, *, what: str = "ciphertext") -> Any:
    """A ciphertext from bytes, validated by SEAL.

    Raises:
        DataError: Not a valid ciphertext for the parameters.
    """
    return _load(sealapi().Ciphertext(), params, data, what)


def load_galois_keys(params: HEParams, data: bytes) -> Any:
    """Galois keys from bytes, validated by SEAL, holding both rotations the protocol needs.

    Raises:
        DataError: Not valid keys, or a needed rotation key is missing.
    """
    keys = _load(sealapi().GaloisKeys(), params, data, "Galois keys")
    missing = [e for e in galois_elements(params) if not keys.has_key(e)]
    if missing:
        raise DataError(
            f"encrypted scoring request: the Galois keys lack the rotations by 1 and by "
            f"{params.giant_step} slots (Galois elements {missing} missing)"
        )
    return keys
