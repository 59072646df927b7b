"""Facts about a source file computed beside the parser: SHA-256, size, UTF-8 validity.

:class:`SourceDigest` reads the file once in a background thread while pyarrow parses it in
another, so the checksum costs no extra time on a machine with a second core (``hashlib`` and
the NumPy ASCII test release the GIL). Invalid UTF-8 is found here too, even in columns the
reader does not convert.
"""

from __future__ import annotations

import codecs
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ByteProgress", "SourceDigest", "SourceFacts", "digest_file", "first_line"]

#: Called as ``progress(bytes_done, bytes_in_file)`` while a file is read (an import's progress).
ByteProgress = Callable[[int, int], None]

_CHUNK = 8 << 20
_FIRST_LINE_LIMIT = 1 << 20


@dataclass(frozen=True)
class SourceFacts:
    """What :class:`SourceDigest` found.

    Attributes:
        sha256: Hex SHA-256 of the file's bytes.
        size: Bytes in the file.
        utf8_ok: Whether the whole file is valid UTF-8.
    """

    sha256: str
    size: int
    utf8_ok: bool


class SourceDigest:
    """Hash a file and check its UTF-8 in a background thread.

    Args:
        path: The file.
        check_utf8: Also check that the bytes are valid UTF-8.
    """

    def __init__(self, path: str | Path, *, check_utf8: bool = True) -> None:
        self._path = Path(path)
        self._check_utf8 = check_utf8
        self._facts: SourceFacts | None = None
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="privrank-digest", daemon=True)
        self._thread.start()

    def result(self) -> SourceFacts:
        """Wait for the thread and return its findings (re-raising its error, if any)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._facts is not None
        return self._facts

    def cancel(self) -> None:
        """Stop reading early (the result is then unusable); for reads that fail."""
        self._cancel.set()

    def _run(self) -> None:
        try:
            self._facts = digest_file(self._path, check_utf8=self._check_utf8, cancel=self._cancel)
        except BaseException as exc:  # handed to the caller in result()
            self._error = exc


def digest_file(
    path: Path, *, check_utf8: bool = True, cancel: threading.Event | None = None
) -> SourceFacts:
    """SHA-256, size and UTF-8 validity of ``path``, in one streaming pass."""
    sha = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8_ok = True
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            if cancel is not None and cancel.is_set():
                break
            sha.update(chunk)
            size += len(chunk)
            if check_utf8 and utf8_ok:
                utf8_ok = _utf8_chunk(decoder, chunk)
    if check_utf8 and utf8_ok:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_ok = False
    return SourceFacts(sha.hexdigest(), size, utf8_ok)


def _utf8_chunk(decoder: codecs.IncrementalDecoder, chunk: bytes) -> bool:
    pending = decoder.getstate()[0]
    if not pending and int(np.frombuffer(chunk, dtype=np.uint8).max()) < 0x80:
        return True  # pure ASCII, nothing carried over: valid without decoding
    try:
        decoder.decode(chunk)
    except UnicodeDecodeError:
        return False
    return True


def first_line(path: str | Path) -> tuple[bytes, bool] | None:
    """The first line of a file without its line ending and UTF-8 BOM.

    Returns:
        ``(line, more)`` where ``more`` says whether anything follows the line; ``None`` for
        an empty file. Lines longer than 1 MiB are cut there.
    """
    with Path(path).open("rb") as handle:
        raw = handle.readline(_FIRST_LINE_LIMIT)
        if not raw:
            return None
        more = bool(handle.read(1))
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw, more
