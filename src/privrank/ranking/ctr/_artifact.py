"""The on-disk form of a trained CTR ranker: JSON + safetensors (+ text), every file checksummed.

A ranker directory holds

- ``ranker.json``: format version, ranker name, config, feature vocabulary, calibration,
  training history;
- ``arrays.safetensors``: every learned array (network weights); no pickle anywhere;
- ``<name>.txt``: a peer's own text model, when it has one (LightGBM's model string);
- ``checksums.json``: the SHA-256 of each of the files above.

:func:`read_ranker_dir` verifies that exactly the listed files are present, each with its
recorded hash, before it parses anything (:func:`privrank.models._artifact.sha256_of`), so a
truncated or tampered directory fails with :class:`~privrank.errors.ArtifactError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from privrank.atomic import atomic_directory
from privrank.errors import ArtifactError
from privrank.models._artifact import sha256_of

__all__ = ["FORMAT", "FORMAT_VERSION", "read_ranker_dir", "write_ranker_dir"]

FORMAT = "privrank.ctr-ranker"
FORMAT_VERSION = 1
HEADER_FILE = "ranker.json"
ARRAYS_FILE = "arrays.safetensors"
CHECKSUMS_FILE = "checksums.json"


def write_ranker_dir(
    directory: Path, header: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, str]
) -> Path:
    """Write a ranker directory atomically (assembled aside, renamed into place)."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **header}
    bad = [n for n in files if n in (HEADER_FILE, ARRAYS_FILE, CHECKSUMS_FILE) or "/" in n]
    if bad:
        raise ArtifactError(f"reserved or nested file names in a ranker's state: {bad}")
    with atomic_directory(directory) as tmp:
        (tmp / HEADER_FILE).write_text(json.dumps(header, indent=1, sort_keys=True) + "\n")
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp / ARRAYS_FILE)
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        payload = [HEADER_FILE, ARRAYS_FILE, *sorted(files)]
        checksums = {"algorithm": "sha256", "files": {n: sha256_of(tmp / n) for n in payload}}
        (tmp / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=2, sort_keys=True) + "\n")
    return directory


def read_ranker_dir(
    directory: Path,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """Verify and parse a ranker directory: ``(header, arrays, text files)``.

    Raises:
        ArtifactError: Missing directory or file, an extra file, a checksum mismatch, another
            format or version, or unreadable contents.
    """
    if not directory.is_dir():
        raise ArtifactError(f"{directory} is not a ranker directory: it does not exist")
    listing = directory / CHECKSUMS_FILE
    try:
        recorded = json.loads(listing.read_text())
        algorithm, checked = recorded["algorithm"], dict(recorded["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{listing} is missing or not a valid checksum list: {exc}") from exc
    if algorithm != "sha256" or not {HEADER_FILE, ARRAYS_FILE} <= set(checked):
        raise ArtifactError(f"{listing} must list the sha256 of {HEADER_FILE} and {ARRAYS_FILE}")
    present = {p.name for p in directory.iterdir()} - {CHECKSUMS_FILE}
    extra = sorted(present - set(checked))
    if extra:
        raise ArtifactError(f"{directory} holds files no checksum covers: {', '.join(extra)}")
    for name, digest in checked.items():
        path = directory / name
        if "/" in name or not path.is_file():
            raise ArtifactError(f"{directory}: {name} is missing")
        actual = sha256_of(path)
        if actual != digest:
            raise ArtifactError(
                f"{path}: checksum mismatch (recorded sha256 {digest}, file has {actual}); "
                "the ranker is corrupted or was modified after it was saved"
            )
    try:
        header = json.loads((directory / HEADER_FILE).read_text())
        arrays = load_file(directory / ARRAYS_FILE)
        files = {
            n: (directory / n).read_text(encoding="utf-8")
            for n in checked
            if n not in (HEADER_FILE, ARRAYS_FILE)
        }
    except (OSError, ValueError, SafetensorError) as exc:
        raise ArtifactError(f"cannot read ranker {directory}: {exc}") from exc
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{directory / HEADER_FILE}: not a privrank CTR ranker of format version "
            f"{FORMAT_VERSION} (got {header.get('format')!r} {header.get('format_version')!r})"
        )
    return header, arrays, files
