"""``privrank data import | validate | stats``: bring interaction files into the workspace."""

from __future__ import annotations

from privrank.cli.app import data_app

__all__ = ["data_app"]
