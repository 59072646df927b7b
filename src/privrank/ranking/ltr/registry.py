"""Rankers by name: the built-in rankers are registered here, and saved rankers are loaded."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privrank.errors import ArtifactError, ConfigError
from privrank.ranking.ltr import lambdamart as _lambdamart  # noqa: F401  (registers it)
from privrank.ranking.ltr import listwise as _listwise  # noqa: F401  (registers it)
from privrank.ranking.ltr._base import (
    _REGISTRY,
    RANKER_FORMAT,
    LTRRanker,
    RankerConfig,
    read_ranker_files,
)

__all__ = ["create_ranker", "load_ranker", "ranker_class", "ranker_from_state", "ranker_names"]


def ranker_names() -> list[str]:
    """Names of every registered ranker, sorted."""
    return sorted(_REGISTRY)


def ranker_class(name: str) -> type[LTRRanker]:
    """The ranker class registered under ``name``."""
    if name not in _REGISTRY:
        raise ConfigError(f"Unknown ranker {name!r}. Known rankers: {', '.join(ranker_names())}.")
    return _REGISTRY[name]


def create_ranker(name: str, config: Mapping[str, Any] | RankerConfig | None = None) -> LTRRanker:
    """Construct a registered ranker from its name and a config (mapping or instance)."""
    return ranker_class(name)(config)


def ranker_from_state(header: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> LTRRanker:
    """Rebuild a fitted ranker of any registered kind from its header and arrays.

    Raises:
        ArtifactError: Not a ranker header, an unknown ranker, or arrays that do not fit it.
    """
    name = header.get("ranker")
    if header.get("format") != RANKER_FORMAT or name not in _REGISTRY:
        raise ArtifactError(f"not a privrank ranker (format {header.get('format')!r}, {name!r})")
    return _REGISTRY[str(name)].from_state(header, state)


def load_ranker(directory: str | Path) -> LTRRanker:
    """Read a ranker written by :meth:`LTRRanker.save`, verifying its checksums first."""
    header, state = read_ranker_files(directory)
    return ranker_from_state(header, state)
