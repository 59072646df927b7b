"""Where privrank keeps things, read from ``PRIVRANK_*`` environment variables.

- ``PRIVRANK_DATA_DIR``: a folder of data sets laid out as ``<name>/<files>`` (read-only; the
  catalog looks here first).
- ``PRIVRANK_CACHE_DIR``: downloads of catalog data sets (default ``~/.cache/privrank``).
- ``PRIVRANK_HOME``: the workspace where imported data sets, splits and models are written
  (default ``~/.privrank``).
- ``PRIVRANK_LEDGER_URL``: the privacy budget ledger's database (SQLAlchemy URL; default a SQLite
  file ``$PRIVRANK_HOME/ledger.sqlite``; ``postgresql://...`` for PostgreSQL).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_dir", "datasets_dir", "home_dir"]


def data_dir() -> Path | None:
    """The folder named by ``PRIVRANK_DATA_DIR``, or ``None`` when unset."""
    value = os.environ.get("PRIVRANK_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Download cache for catalog data sets."""
    value = os.environ.get("PRIVRANK_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "privrank"


def home_dir() -> Path:
    """The privrank workspace."""
    value = os.environ.get("PRIVRANK_HOME")
    return Path(value).expanduser() if value else Path.home() / ".privrank"


def datasets_dir() -> Path:
    """Where ``privrank data import`` writes imported data sets (``$PRIVRANK_HOME/datasets``)."""
    return home_dir() / "datasets"
