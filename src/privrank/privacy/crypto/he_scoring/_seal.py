"""SEAL (through TenSEAL's ``sealapi``) for the protocol: context, (de)serialisation.

``sealapi`` objects serialise to and from files only, so bytes pass through a private temporary
directory. Loading untrusted bytes is done in two checks, and any failure becomes a
:class:`~privrank.errors.DataError` (HTTP 422):

1. **SEAL's 16-byte header, strictly** (:func:`check_header`): magic ``0xA15E``, header size 16,
   this build's SEAL version, a supported compression mode, the two reserved bytes zero, and the
   declared size equal to the bytes received. SEAL's own ``load`` ignores the reserved bytes
   (bytes 6 and 7: a flipped byte there was accepted in every try), so without this check a
   tampered header could load; with it, any change of any header byte is refused.
2. **SEAL's ``load``** against the parameters: sizes, the parameter id, every coefficient below
   its modulus (``is_valid_for``).

What no check can give: the payload after the header is SEAL's (compressed) polynomial data,
and a CKKS ciphertext is malleable by design (IND-CPA, no integrity). A changed payload byte
either breaks the compressed stream or a coefficient's range (refused) or decodes to another
well-formed ciphertext, i.e. the encryption of another vector, which nobody but the key holder
can tell apart. That only ever gives the client (the one party that can make or read such a
ciphertext) scores for another vector; the transport's integrity comes from TLS.
"""

from __future__ import annotations

import functools
import os
import struct
import tempfile
from typing import Any

from privrank.errors import ConfigError, DataError
from privrank.privacy.crypto.he_scoring.protocol import HEParams

__all__ = [
    "HEADER_BYTES",
    "check_header",
    "context",
    "dump",
    "galois_elements",
    "load_ciphertext",
    "load_galois_keys",
    "sealapi",
]

#: SEAL's serialisation header: magic (u16), header size (u8), version major (u8), version minor
#: (u8), compression mode (u8), reserved (u16), total size in bytes with the header (u64).
_HEADER = struct.Struct("<HBBBBHQ")
HEADER_BYTES = _HEADER.size
_MAGIC = 0xA15E


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


@functools.lru_cache(maxsize=1)
def _version() -> tuple[int, int]:
    """The SEAL version of this build, read from the header SEAL itself writes."""
    api = sealapi()
    header = _HEADER.unpack_from(dump(api.EncryptionParameters(api.SCHEME_TYPE.CKKS)))
    return int(header[2]), int(header[3])


def check_header(data: bytes, what: str) -> None:
    """Refuse ``data`` unless its SEAL header is exactly what this build writes.

    Every field is compared with one expected value (or, for the compression mode, with the
    modes this build supports), so any change of a header byte is refused; SEAL's ``load``
    alone does not look at the reserved bytes.

    Raises:
        DataError: Naming the field, the value found and the value expected.
    """
    if len(data) < HEADER_BYTES:
        raise DataError(
            f"encrypted scoring: the {what} is not a valid SEAL object: {len(data)} bytes, "
            f"shorter than SEAL's {HEADER_BYTES}-byte header"
        )
    magic, size, major, minor, compr, reserved, total = _HEADER.unpack_from(data)
    modes = {int(m.value) for m in sealapi().COMPR_MODE_TYPE.__members__.values()}
    supported = {m for m in modes if sealapi().Serialization.IsSupportedComprMode(m)}
    expected_version = _version()
    problems = [
        (magic == _MAGIC, "magic", hex(magic), hex(_MAGIC)),
        (size == HEADER_BYTES, "header size", size, HEADER_BYTES),
        (
            (major, minor) == expected_version,
            "SEAL version",
            f"{major}.{minor}",
            "{}.{}".format(*expected_version),
        ),
        (compr in supported, "compression mode", compr, f"one of {sorted(supported)}"),
        (reserved == 0, "reserved bytes", hex(reserved), "0x0"),
        (total == len(data), "declared size", total, f"{len(data)} (the bytes received)"),
    ]
    for ok, field, found, expected in problems:
        if not ok:
            raise DataError(
                f"encrypted scoring: the {what} is not a valid SEAL object: header field "
                f"{field} is {found}; expected {expected}"
            )


def _load(obj: Any, params: HEParams, data: bytes, what: str) -> Any:
    check_header(data, what)
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
