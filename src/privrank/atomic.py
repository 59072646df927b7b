"""Atomic writes: nothing half-written is ever left where a reader can see it.

Files and directories are assembled under a temporary name in the destination's own folder (same
filesystem) and moved into place with :func:`os.replace`, which is atomic on POSIX. On an
exception the temporary is removed and the destination is left as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory", "atomic_file"]


@contextmanager
def atomic_file(destination: str | Path, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary file that replaces ``destination`` only if the block succeeds.

    Args:
        destination: Final path.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        **open_kwargs: Passed to :func:`open` (``encoding``, ``newline``, ...).

    Yields:
        The open file object.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a normal file obeys the umask
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(destination: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place on success.

    An existing destination is replaced only once the new one is complete.

    Yields:
        The temporary directory to write into.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a normal directory obeys the umask
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, old)
    os.replace(tmp, destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
