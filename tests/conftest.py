"""Shared fixtures: the real data folder (when PRIVRANK_DATA_DIR is set) and an isolated home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def real_data_dir() -> Path:
    """``$PRIVRANK_DATA_DIR``; the test is skipped when it is unset (CI always sets it)."""
    value = os.environ.get("PRIVRANK_DATA_DIR")
    if not value:
        pytest.skip("PRIVRANK_DATA_DIR is not set")
    return Path(value)


@pytest.fixture
def privrank_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace and download cache, so tests never touch the user's own."""
    home = tmp_path / "home"
    monkeypatch.setenv("PRIVRANK_HOME", str(home))
    monkeypatch.setenv("PRIVRANK_CACHE_DIR", str(tmp_path / "cache"))
    return home
