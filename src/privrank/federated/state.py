"""The server's state between rounds, saved atomically so that a run can resume.

A run directory holds::

    RUN/
      state.json     round, clipping norm, released rounds, and what the run is (config,
                     data fingerprint), so a resume is refused for another run
      state.npz      the item-side model and the released item counts (no pickle)
      metrics.jsonl  one line per round (see :mod:`privrank.federated.simulator`)

``state.npz`` is written first and ``state.json`` (which names its SHA-256) last, each by
atomic rename, so a process killed at any point leaves the previous consistent state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privrank.atomic import atomic_file
from privrank.errors import ArtifactError, ConfigError

__all__ = ["METRICS_FILE", "ServerState"]

#: numpy's ``savez`` (its stubs type the keyword arrays as its own options).
_savez: Any = np.savez

STATE_FILE = "state.json"
ARRAYS_FILE = "state.npz"
METRICS_FILE = "metrics.jsonl"


@dataclass
class ServerState:
    """What the server carries from one round to the next.

    Attributes:
        round: Rounds completed (released or not).
        released_rounds: Rounds whose model was released (and charged).
        clipping_norm: :math:`C` of the next round (``None``: non-private run).
        arrays: The model's server-side arrays (e.g. ``item_factors``, ``item_counts``).
        identity: What the run is (config, data fingerprint): a resume must match it.
        spend_ids: Ledger spends of the released rounds (and of the counts).
    """

    round: int
    released_rounds: int
    clipping_norm: float | None
    arrays: dict[str, np.ndarray]
    identity: dict[str, Any]
    spend_ids: list[str] = field(default_factory=list)

    def save(self, directory: Path) -> None:
        """Write the state into ``directory`` (atomically, arrays first)."""
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_file(directory / ARRAYS_FILE, "wb") as handle:
            _savez(handle, **self.arrays)
        digest = hashlib.sha256((directory / ARRAYS_FILE).read_bytes()).hexdigest()
        record = {
            "format": "privrank.federated.state",
            "version": 1,
            "round": self.round,
            "released_rounds": self.released_rounds,
            "clipping_norm": self.clipping_norm,
            "identity": self.identity,
            "spend_ids": self.spend_ids,
            "arrays_sha256": digest,
        }
        with atomic_file(directory / STATE_FILE, encoding="utf-8") as handle:
            handle.write(json.dumps(record, indent=2) + "\n")

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether ``directory`` holds a saved state."""
        return (directory / STATE_FILE).is_file()

    @classmethod
    def load(cls, directory: Path, identity: dict[str, Any]) -> ServerState:
        """Read the state in ``directory``, checking it belongs to the run ``identity``.

        Raises:
            ArtifactError: Missing, malformed or modified files.
            ConfigError: The saved run is another one (config or data differ).
        """
        path = directory / STATE_FILE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            blob = (directory / ARRAYS_FILE).read_bytes()
            if hashlib.sha256(blob).hexdigest() != record["arrays_sha256"]:
                raise ArtifactError(f"{directory / ARRAYS_FILE}: checksum differs from {path}")
            with np.load(directory / ARRAYS_FILE, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            state = cls(
                round=int(record["round"]),
                released_rounds=int(record["released_rounds"]),
                clipping_norm=record["clipping_norm"],
                arrays=arrays,
                identity=record["identity"],
                spend_ids=list(record["spend_ids"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: cannot resume from this run state: {exc}") from exc
        if state.identity != identity:
            differ = sorted(
                key
                for key in set(state.identity) | set(identity)
                if state.identity.get(key) != identity.get(key)
            )
            raise ConfigError(
                f"{directory} holds the state of another run (differs in: {', '.join(differ)}); "
                "resume with the same options and data, or use another run directory"
            )
        return state
