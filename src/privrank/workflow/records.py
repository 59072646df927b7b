"""What every workflow record shares: library versions, atomic JSON files and safe file names.

The runner's result files, the reports, ``training.json`` of a trained model and the tuning
record all use these, so they live below all of them (and the runner and the reports no longer
import each other).
"""

from __future__ import annotations

import json
import math
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from privrank.atomic import atomic_file
from privrank.errors import ConfigError

__all__ = ["library_versions", "safe_name", "write_json"]

_LIBRARIES = ("privrank", "numpy", "scipy", "pyarrow", "torch", "implicit", "pydantic")


def library_versions() -> dict[str, str | None]:
    """Installed versions of privrank and the libraries a result depends on."""
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON atomically (NaN and infinities become ``null``)."""
    with atomic_file(path, encoding="utf-8") as handle:
        handle.write(json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def safe_name(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    if not cleaned:
        raise ConfigError(f"{name!r} cannot be used as a file name")
    return cleaned
