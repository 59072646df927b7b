"""Per-epoch checkpoints of an iterative fit: one atomic, checksummed file in a run directory.

A checkpoint holds the arrays the next epoch starts from (factors, the loss history) and an
*identity*: what was being fitted (model, config, seed, the training matrix's SHA-256, sizes).
A fit resumes from a checkpoint only when the identity is its own, so that resuming gives the
same result as not resuming; a checkpoint of another fit is ignored (and replaced by the next
one written).

The file (``<name>.checkpoint.safetensors``) is written by :func:`privrank.atomic.atomic_file`
(a temporary file renamed into place: a crash leaves the previous checkpoint or the new one,
never half of one). Its safetensors metadata holds the identity, the epoch, and the SHA-256 of
the epoch, identity and every array's bytes; :func:`read_checkpoint` recomputes it and refuses
a file whose bytes changed (:class:`~privrank.errors.ArtifactError`). No pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError
from safetensors.numpy import load, save

from privrank.atomic import atomic_file
from privrank.errors import ArtifactError

__all__ = ["Checkpoint", "checkpoint_path", "matrix_digest", "read_checkpoint", "write_checkpoint"]

_FORMAT = "privrank.fit-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """The state of a fit after ``epoch`` epochs.

    Attributes:
        epoch: Epochs completed.
        identity: What was being fitted (JSON-serialisable).
        arrays: The state the next epoch starts from.
    """

    epoch: int
    identity: dict[str, Any]
    arrays: dict[str, np.ndarray]


def checkpoint_path(directory: str | Path, name: str) -> Path:
    """Where the checkpoint of model ``name`` lives in ``directory``."""
    return Path(directory) / f"{name}.checkpoint.safetensors"


def matrix_digest(matrix: sp.csr_matrix) -> str:
    """SHA-256 of a CSR matrix's shape and structure (the training data's identity)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([int(n) for n in matrix.shape]).encode())
    digest.update(np.ascontiguousarray(matrix.indptr, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(matrix.indices, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _digest(epoch: int, identity: str, arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(f"{_FORMAT}\n{epoch}\n{identity}\n".encode())
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (replacing the previous one)."""
    identity = json.dumps(checkpoint.identity, sort_keys=True)
    arrays = {key: np.ascontiguousarray(value) for key, value in checkpoint.arrays.items()}
    metadata = {
        "format": _FORMAT,
        "epoch": str(checkpoint.epoch),
        "identity": identity,
        "sha256": _digest(checkpoint.epoch, identity, arrays),
    }
    payload = save(arrays, metadata=metadata)
    with atomic_file(path, "wb") as handle:
        handle.write(payload)


def read_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint at ``path``, or ``None`` when there is none.

    Raises:
        ArtifactError: The file is not a checkpoint, or its checksum does not match its bytes.
    """
    path = Path(path)
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the checkpoint: {exc}") from exc
    try:
        arrays = load(payload)
        metadata = _metadata(payload)
    except (SafetensorError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable checkpoint ({exc})") from exc
    if metadata.get("format") != _FORMAT:
        raise ArtifactError(
            f"{path}: format {metadata.get('format')!r}, expected {_FORMAT!r}; delete it to "
            "start the fit afresh"
        )
    try:
        epoch = int(metadata["epoch"])
        identity_text = metadata["identity"]
        identity = json.loads(identity_text)
        recorded = metadata["sha256"]
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: checkpoint metadata incomplete ({exc})") from exc
    actual = _digest(epoch, identity_text, arrays)
    if actual != recorded:
        raise ArtifactError(
            f"{path}: checksum mismatch (recorded sha256 {recorded}, contents give {actual}); "
            "the checkpoint is corrupted: delete it to start the fit afresh"
        )
    return Checkpoint(epoch=epoch, identity=identity, arrays=arrays)


def _metadata(payload: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors payload (its JSON header)."""
    if len(payload) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8 : 8 + size])
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not an object")
    return {str(k): str(v) for k, v in metadata.items()}
