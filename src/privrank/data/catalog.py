"""Named datasets: where to find them, where to get them, and how to check them.

A name (``ml-100k``, ``beauty``, ...) resolves to one interaction file, looked for in order:

1. ``$PRIVRANK_DATA_DIR/<folder>/<file>`` (a read-only folder of data sets, e.g.
   ``$PRIVRANK_DATA_DIR/ml-100k/u.data``);
2. the download cache, ``$PRIVRANK_CACHE_DIR/<folder>/<file>`` (default
   ``~/.cache/privrank``);
3. a download from the official source: the bytes are hashed while they arrive, refused unless
   their SHA-256 is the pinned one, extracted from the zip archive when there is one, and
   written atomically into the cache (a ``<file>.source.json`` sidecar records where they came
   from and their hash).

Offline, :class:`~privrank.errors.DatasetUnavailableError` says which file to place where.

Checksums are pinned only where they are known honestly: MovieLens archives by the SHA-256 and
size that TensorFlow Datasets publishes for the same URLs
(``tensorflow_datasets/url_checksums/movielens.txt``); single files (``u.data``, ``Beauty.txt``,
``Video.txt``) by the SHA-256 of copies whose MD5 matched the one documented with them (see each
entry's ``checksums``). Where an extracted file's hash is not known, only the archive is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from privrank import settings
from privrank.atomic import atomic_file
from privrank.data.readers import ByteProgress, ReadOptions, ReadResult, read_interactions
from privrank.data.readers.options import Format
from privrank.errors import ConfigError, DataError, DatasetUnavailableError

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "entry",
    "load",
    "names",
    "resolve",
    "verify_sha256",
]

_CHUNK = 1 << 20
_TFDS = (
    "archive SHA-256 and size as published by TensorFlow Datasets for this URL "
    "(tensorflow_datasets/url_checksums/movielens.txt)"
)


@dataclass(frozen=True)
class CatalogEntry:
    """One named dataset.

    Attributes:
        name: Catalog name (``ml-100k``).
        folder: Folder under ``PRIVRANK_DATA_DIR`` and under the cache (``ml-100k``).
        file: The interaction file in that folder (``u.data``).
        format: The reader format of that file.
        url: Official download: a zip archive holding the file (``member``), or the file itself.
        member: Path of the file inside the archive; ``None`` when ``url`` is the file.
        archive_sha256: Pinned SHA-256 of the archive (``None`` when not known).
        archive_size: Pinned size of the archive in bytes.
        file_sha256: Pinned SHA-256 of the file itself (``None`` when not known).
        checksums: Where the pinned checksums come from and what cannot be verified.
        description: What the data are.
        terms: The terms of use, in short (none of these data may be redistributed).
    """

    name: str
    folder: str
    file: str
    format: Format
    url: str
    member: str | None = None
    archive_sha256: str | None = None
    archive_size: int | None = None
    file_sha256: str | None = None
    checksums: str = ""
    description: str = ""
    terms: str = ""

    def __post_init__(self) -> None:
        pinned = self.archive_sha256 if self.member else self.file_sha256
        if not pinned:
            raise ConfigError(
                f"catalog entry {self.name!r}: the download must have a pinned SHA-256 "
                f"({'archive_sha256' if self.member else 'file_sha256'})"
            )

    @property
    def relative_path(self) -> Path:
        """``<folder>/<file>``: where the file lives under a data folder or the cache."""
        return Path(self.folder) / self.file

    def data_dir_path(self) -> Path | None:
        """The file's place under ``PRIVRANK_DATA_DIR`` (``None`` when that is unset)."""
        root = settings.data_dir()
        return None if root is None else root / self.relative_path

    def cache_path(self) -> Path:
        """The file's place in the download cache."""
        return settings.cache_dir() / self.relative_path


def _movielens(name: str, file: str, fmt: Format, sha256: str, size: int, **kw: Any):
    return CatalogEntry(
        name=name,
        folder=name,
        file=file,
        format=fmt,
        url=f"https://files.grouplens.org/datasets/movielens/{name}.zip",
        member=f"{name}/{file}",
        archive_sha256=sha256,
        archive_size=size,
        terms="GroupLens terms: research use, acknowledge, no redistribution, no commercial "
        "use without permission",
        **kw,
    )


_ENTRIES = (
    _movielens(
        "ml-100k",
        "u.data",
        "ml-100k",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        4_924_029,
        file_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        checksums=f"{_TFDS}; u.data SHA-256 computed from a copy whose MD5 "
        "(6e47046882bad158b0efbb84cd5cb987) matches the one documented with it",
        description="100,000 ratings (1-5) by 943 users on 1,682 movies, 1997-1998",
    ),
    _movielens(
        "ml-1m",
        "ratings.dat",
        "ml-1m",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        5_917_549,
        checksums=f"{_TFDS}; the SHA-256 of the extracted ratings.dat is not known here",
        description="1,000,209 ratings (1-5) by 6,040 users on 3,706 movies, 2000-2003",
    ),
    _movielens(
        "ml-20m",
        "ratings.csv",
        "ml-csv",
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        198_702_078,
        checksums=f"{_TFDS}; the SHA-256 of the extracted ratings.csv is not known here",
        description="20,000,263 ratings (0.5-5) by 138,493 users on 26,744 movies, 1995-2015",
    ),
    _movielens(
        "ml-25m",
        "ratings.csv",
        "ml-csv",
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        261_978_986,
        checksums=f"{_TFDS}; the SHA-256 of the extracted ratings.csv is not known here",
        description="25,000,095 ratings (0.5-5) by 162,541 users on 59,047 movies, 1995-2019",
    ),
    _movielens(
        "ml-latest-small",
        "ratings.csv",
        "ml-csv",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        978_202,
        checksums=f"{_TFDS}; GroupLens may refresh 'latest' archives, in which case the "
        "download is refused until this pin is updated",
        description="about 100,000 ratings (0.5-5) by 610 users on 9,742 movies",
    ),
    CatalogEntry(
        name="beauty",
        folder="amazon-seqrec-s3rec",
        file="Beauty.txt",
        format="sequences",
        url="https://raw.githubusercontent.com/salesforce/ICLRec/"
        "2890e6c3ff6a22c6699fc19cb863b66786c1cde4/data/Beauty.txt",
        file_sha256="226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        checksums="SHA-256 computed from a copy (1,090,094 bytes) whose MD5 "
        "(cb03635343187f36526ed4ba48102b53) matches the one documented with it",
        description="Amazon Beauty 5-core sequences (S3-Rec/ICLRec preprocessing): 22,363 users, "
        "12,101 items, 198,502 interactions",
        terms="Amazon review data (McAuley et al.) for research use; preprocessing BSD-3-Clause "
        "(salesforce/ICLRec)",
    ),
    CatalogEntry(
        name="video",
        folder="sasrec-amazon-video",
        file="Video.txt",
        format="pairs",
        url="https://raw.githubusercontent.com/kang205/SASRec/"
        "e3738967fddab206d6eeb4fda433e7a7034dd8b1/data/Video.txt",
        file_sha256="b7376fe24430743f411dc7f567285657b2adb3f74361cc7ba0aee94f3024b651",
        checksums="SHA-256 computed from a copy (3,187,124 bytes) whose MD5 "
        "(90ee83b589a4b2c2306bc8284214fdf5) matches the one documented with it",
        description="Amazon Video Games 5-core pairs (SASRec): 31,013 users, 23,715 items, "
        "287,107 interactions",
        terms="Amazon review data (McAuley et al.) for research use; SASRec repository Apache-2.0",
    ),
)

#: Every named dataset, by name.
CATALOG: Mapping[str, CatalogEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


def names() -> list[str]:
    """The catalog's dataset names, sorted."""
    return sorted(CATALOG)


def entry(name: str | CatalogEntry) -> CatalogEntry:
    """The catalog entry of ``name`` (an entry is returned as is).

    Raises:
        ConfigError: No dataset has that name.
    """
    if isinstance(name, CatalogEntry):
        return name
    try:
        return CATALOG[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; the catalog has {', '.join(names())}"
        ) from None


def resolve(name: str | CatalogEntry, *, download: bool = True, timeout: float = 60.0) -> Path:
    """The path of a named dataset's file, downloading it into the cache if needed.

    Args:
        name: A catalog name, or an entry.
        download: Try the official source when the file is on disk nowhere.
        timeout: Seconds to wait on the network.

    Returns:
        The file under ``PRIVRANK_DATA_DIR``, else in the cache.

    Raises:
        DatasetUnavailableError: Not on disk and not downloadable (the message says where to
            place the file).
        DataError: The download's checksum is not the pinned one (nothing is kept).
    """
    item = entry(name)
    local = item.data_dir_path()
    if local is not None and local.is_file():
        return local
    cached = item.cache_path()
    if cached.is_file():
        return cached
    if not download:
        raise _unavailable(item, "downloads are disabled")
    try:
        _download(item, cached, timeout)
    except urllib.error.HTTPError as exc:
        raise _unavailable(item, f"download failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _unavailable(item, f"download failed: {reason}") from exc
    return cached


def load(
    name: str | CatalogEntry,
    /,
    *,
    download: bool = True,
    verify: bool = True,
    progress: ByteProgress | None = None,
    **read_overrides: Any,
) -> ReadResult:
    """Resolve a named dataset and read it.

    Args:
        name: A catalog name, or an entry.
        download: Allow a download into the cache.
        verify: Refuse a file whose SHA-256 (computed while reading) differs from the pinned
            one or, for a download, from the one recorded when it was verified.
        progress: Bytes parsed and bytes in the file, while it is read (see
            :func:`~privrank.data.readers.read_interactions`).
        **read_overrides: :class:`~privrank.data.readers.ReadOptions` fields
            (``on_error``, ``rejects_path``, ...).

    Returns:
        What :func:`~privrank.data.readers.read_interactions` returns.

    Raises:
        DataError: A checksum mismatch, or invalid data.
        DatasetUnavailableError: The file is nowhere and cannot be downloaded.
    """
    item = entry(name)
    path = resolve(item, download=download)
    options = ReadOptions(**({"format": item.format, "name": item.name} | read_overrides))
    result = read_interactions(path, options, progress=progress)
    if verify:
        verify_sha256(item, path, result.interactions.metadata.source_sha256)
    return result


def verify_sha256(name: str | CatalogEntry, path: str | Path, sha256: str | None) -> None:
    """Refuse a dataset file whose SHA-256 is not the expected one.

    The expected hash is the entry's pinned ``file_sha256`` or, for a file downloaded into the
    cache, the one recorded in its sidecar when the download was verified; with neither (an
    archive whose extracted file has no pinned hash, placed by hand) there is nothing to check.

    Args:
        name: A catalog name, or an entry.
        path: The file that was read.
        sha256: Its SHA-256 (as computed while reading, e.g. ``metadata.source_sha256``).

    Raises:
        DataError: The hashes differ.
    """
    item = entry(name)
    path = Path(path)
    expected = item.file_sha256 or _recorded_sha256(path)
    if expected is not None and sha256 != expected:
        raise DataError(
            f"dataset {item.name!r}: checksum mismatch, the file is not the official one "
            "(pass verify=False to use it anyway)",
            path=path,
            field="sha256",
            value=sha256,
            expected=expected,
        )


# -------------------------------------------------------------------- downloading
def _download(item: CatalogEntry, target: Path, timeout: float) -> None:
    created = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download_into(item, target, timeout)
    except BaseException:
        if created and not any(target.parent.iterdir()):
            target.parent.rmdir()
        raise


def _download_into(item: CatalogEntry, target: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix=f".{item.file}.download-", dir=target.parent) as tmp:
        blob = Path(tmp) / "download"
        digest, size = _fetch(item.url, blob, timeout)
        pinned = item.archive_sha256 if item.member else item.file_sha256
        pinned_size = item.archive_size if item.member else None
        if digest != pinned or (pinned_size is not None and size != pinned_size):
            raise DataError(
                f"dataset {item.name!r}: checksum mismatch in the download from {item.url} "
                f"({size} bytes); nothing was kept",
                field="sha256",
                value=digest,
                expected=f"{pinned}" + ("" if pinned_size is None else f" ({pinned_size} bytes)"),
            )
        if item.member is None:
            file_digest = digest
            blob.chmod(0o644)
            os.replace(blob, target)
        else:
            file_digest = _extract(item, item.member, blob, target)
    sidecar = {
        "name": item.name,
        "url": item.url,
        "member": item.member,
        "download_sha256": digest,
        "file_sha256": file_digest,
        "downloaded": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with atomic_file(_sidecar(target), "w", encoding="utf-8") as out:
        out.write(json.dumps(sidecar, indent=2) + "\n")


def _fetch(url: str, destination: Path, timeout: float) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": "privrank"})
    with (
        urllib.request.urlopen(request, timeout=timeout) as response,
        destination.open("wb") as out,
    ):
        while chunk := response.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return sha.hexdigest(), size


def _extract(item: CatalogEntry, member: str, archive: Path, target: Path) -> str:
    try:
        with zipfile.ZipFile(archive) as zipped:
            source = zipped.open(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(
            f"dataset {item.name!r}: cannot extract {member} from {item.url} ({exc})"
        ) from exc
    sha = hashlib.sha256()
    with source, atomic_file(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            sha.update(chunk)
            out.write(chunk)
        digest = sha.hexdigest()
        if item.file_sha256 is not None and digest != item.file_sha256:
            raise DataError(
                f"dataset {item.name!r}: checksum mismatch in {member} extracted from "
                f"{item.url}; nothing was kept",
                field="sha256",
                value=digest,
                expected=item.file_sha256,
            )
    target.chmod(0o644)
    return digest


def _sidecar(path: Path) -> Path:
    return path.with_name(f"{path.name}.source.json")


def _recorded_sha256(path: Path) -> str | None:
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())["file_sha256"]
    except (ValueError, KeyError, OSError):
        return None


def _unavailable(item: CatalogEntry, reason: str) -> DatasetUnavailableError:
    local = item.data_dir_path()
    where_local = (
        f"{local} (under PRIVRANK_DATA_DIR)"
        if local is not None
        else f"$PRIVRANK_DATA_DIR/{item.relative_path} (PRIVRANK_DATA_DIR is not set)"
    )
    origin = (
        f"it is {item.member} inside the archive {item.url}"
        if item.member
        else f"it is downloaded from {item.url}"
    )
    return DatasetUnavailableError(
        f"dataset {item.name!r} is not available ({reason}): place the file {item.file} at "
        f"{where_local} or at {item.cache_path()} (the download cache); {origin}"
    )
