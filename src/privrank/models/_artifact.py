"""The on-disk form of a trained model: safetensors + JSON + Parquet, every file checksummed.

A model directory holds

- ``model.json``: format version, registry name, class, config, privrank version, sizes;
- ``arrays.safetensors``: every learned array (no pickle anywhere);
- ``user_ids.parquet`` / ``item_ids.parquet``: the external ids of the training vocabulary;
- ``checksums.json``: the SHA-256 of each of the files above.

:func:`read_artifact` verifies every checksum (and that no file is missing or extra) before it
parses anything, so a truncated or tampered artifact fails with :class:`ArtifactError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from privrank.atomic import atomic_directory
from privrank.errors import ArtifactError

__all__ = ["FORMAT", "FORMAT_VERSION", "Artifact", "read_artifact", "write_artifact"]

FORMAT = "privrank.model"
FORMAT_VERSION = 1
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.safetensors"
USERS_FILE = "user_ids.parquet"
ITEMS_FILE = "item_ids.parquet"
CHECKSUMS_FILE = "checksums.json"
_PAYLOAD = (MODEL_FILE, ARRAYS_FILE, USERS_FILE, ITEMS_FILE)


@dataclass(frozen=True)
class Artifact:
    """The parsed contents of a model directory."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    user_ids: pa.Array
    item_ids: pa.Array


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_artifact(
    directory: str | Path,
    header: dict[str, Any],
    arrays: dict[str, np.ndarray],
    user_ids: pa.Array,
    item_ids: pa.Array,
) -> Path:
    """Write a model directory atomically (assembled aside, renamed into place)."""
    directory = Path(directory)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **header}
    with atomic_directory(directory) as tmp:
        (tmp / MODEL_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp / ARRAYS_FILE)
        pq.write_table(pa.table({"id": user_ids}), tmp / USERS_FILE)
        pq.write_table(pa.table({"id": item_ids}), tmp / ITEMS_FILE)
        checksums = {
            "algorithm": "sha256",
            "files": {name: sha256_of(tmp / name) for name in _PAYLOAD},
        }
        (tmp / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=2, sort_keys=True) + "\n")
    return directory


def verify_checksums(directory: Path) -> None:
    """Check that the directory holds exactly the listed files, each with its recorded hash."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory} is not a model directory: it does not exist")
    listing = directory / CHECKSUMS_FILE
    if not listing.is_file():
        raise ArtifactError(f"{directory} is not a privrank model: {CHECKSUMS_FILE} is missing")
    try:
        recorded = json.loads(listing.read_text())
        algorithm, files = recorded["algorithm"], recorded["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{listing} is not a valid checksum list: {exc}") from exc
    if algorithm != "sha256" or set(files) != set(_PAYLOAD):
        raise ArtifactError(
            f"{listing} must list the sha256 of {', '.join(_PAYLOAD)}; it lists "
            f"{algorithm} of {', '.join(sorted(files))}"
        )
    present = {p.name for p in directory.iterdir()} - {CHECKSUMS_FILE}
    extra = sorted(present - set(_PAYLOAD))
    if extra:
        raise ArtifactError(f"{directory} holds files no checksum covers: {', '.join(extra)}")
    for name in _PAYLOAD:
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{directory}: {name} is missing")
        actual = sha256_of(path)
        if actual != files[name]:
            raise ArtifactError(
                f"{path}: checksum mismatch (recorded sha256 {files[name]}, file has {actual}); "
                "the artifact is corrupted or was modified after it was saved"
            )


def read_artifact(directory: str | Path) -> Artifact:
    """Verify and parse a model directory written by :func:`write_artifact`."""
    directory = Path(directory)
    verify_checksums(directory)
    try:
        header = json.loads((directory / MODEL_FILE).read_text())
    except ValueError as exc:
        raise ArtifactError(f"{directory / MODEL_FILE} is not valid JSON: {exc}") from exc
    if header.get("format") != FORMAT:
        raise ArtifactError(f"{directory / MODEL_FILE}: not a privrank model file")
    if header.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{directory}: model format version {header.get('format_version')}, this privrank "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        arrays = load_file(directory / ARRAYS_FILE)
        user_ids = pq.read_table(directory / USERS_FILE).column("id").combine_chunks()
        item_ids = pq.read_table(directory / ITEMS_FILE).column("id").combine_chunks()
    except (OSError, KeyError, SafetensorError, pa.ArrowException) as exc:
        raise ArtifactError(f"cannot read model {directory}: {exc}") from exc
    return Artifact(header=header, arrays=arrays, user_ids=user_ids, item_ids=item_ids)
