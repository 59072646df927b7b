"""Fixtures of the console tests: one real workspace for the package's modules (each test
leaves it as it found it: v1 active, the ledger untouched; keys it creates have names of its
own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._workspace import Workspace, build_workspace


@pytest.fixture(scope="package")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A workspace built with the ``privrank`` commands (see :mod:`._workspace`); the
    environment points at it while the package's tests run."""
    root = tmp_path_factory.mktemp("console")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVRANK_HOME", str(root / "home"))
        patch.setenv("PRIVRANK_CACHE_DIR", str(root / "cache"))
        patch.delenv("PRIVRANK_LEDGER_URL", raising=False)
        yield build_workspace(root)
