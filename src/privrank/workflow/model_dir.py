"""The trained-model directory: the one reader and writer of ``privrank train``'s output.

Layout::

    DIR/
      model/          the model artifact (:meth:`~privrank.models.Recommender.save`: safetensors,
                      JSON config and header, ``checksums.json``)
      training.json   the training record (format ``privrank.training``, version 1)

The training record holds the model and its config, the fit (seed, threads, seconds, test-time
history mode), the data it saw (protocol or split, fingerprints), library versions, the ledger
spend of a private fit (``privacy``) and ``model_checksums_sha256``: the SHA-256 of
``model/checksums.json``. Reading a directory always cross-checks that hash, so a model swapped
or edited after training is refused, and :meth:`Recommender.load` verifies every file against the
checksum list itself.

:func:`write_trained` writes such a directory atomically (``privrank train``, ``privrank privacy
release``); :func:`load_trained` reads one (``privrank evaluate --model``, ``privrank privacy
release``); :func:`read_model_dir` also accepts a bare model directory (``model.json`` inside),
which the model store serves (:mod:`privrank.serving.store`); :func:`locate` finds the artifact
and the cross-checked record without loading the model (``privrank privacy report``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privrank.atomic import atomic_directory
from privrank.errors import ArtifactError
from privrank.models import Recommender
from privrank.models._artifact import MODEL_FILE
from privrank.ranking import two_stage as _two_stage  # noqa: F401  (registers "two-stage")
from privrank.workflow.records import library_versions

__all__ = [
    "MODEL_DIR",
    "TRAINING_FILE",
    "TrainedModel",
    "load_trained",
    "locate",
    "read_model_dir",
    "training_record",
    "write_trained",
]

TRAINING_FILE = "training.json"
MODEL_DIR = "model"
CHECKSUMS_FILE = "checksums.json"
FORMAT = "privrank.training"
VERSION = 1


@dataclass(frozen=True)
class TrainedModel:
    """A model read from disk, with its training record.

    Attributes:
        directory: The directory given.
        record: The parsed ``training.json`` (``None`` for a bare model directory).
        model: The loaded, checksum-verified model.
        model_path: The model artifact's directory (``directory/model`` or ``directory``).
    """

    directory: Path
    record: dict[str, Any] | None
    model: Any
    model_path: Path

    @property
    def history_mode(self) -> str:
        """How test users are scored: ``users``, ``fold-in`` or ``refit``."""
        return self.require_record()["fit"]["history_mode"]

    def require_record(self) -> dict[str, Any]:
        """The training record (always there for :func:`load_trained`).

        Raises:
            ArtifactError: A bare model directory, which has none.
        """
        if self.record is None:
            raise ArtifactError(f"{self.directory} has no training record")
        return self.record


def training_record(model: Any, *, fit: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The body of a training record (the writer adds the checksum of the saved model).

    Args:
        model: The fitted model (its registry name and full config are recorded).
        fit: ``seed``, ``threads``, ``seconds``, ``history_mode`` and ``summary`` (the
            model's :meth:`~privrank.models.base.Recommender.fit_summary`) of the fit.
        data: What it was fitted on (``kind``, ``argument``, ``train_fingerprint``, ...).
    """
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": model.name, "config": model.config.model_dump(mode="json")},
        "fit": fit,
        "data": data,
        "versions": library_versions(),
    }


def write_trained(
    out: str | Path, model: Any, record: dict[str, Any], *, release: bool = False
) -> Path:
    """Write ``model`` and its training record to ``out`` atomically (nothing half-written).

    ``model_checksums_sha256`` is added to ``record`` from the saved artifact.

    Args:
        out: The directory to write (replaced only as a whole).
        model: A fitted model.
        record: The training record (:func:`training_record`, or a release's record).
        release: Save the release artifact (:meth:`Recommender.save` ``release=True``).
    """
    out = Path(out)
    with atomic_directory(out) as tmp:
        model.save(tmp / MODEL_DIR, release=release)
        record = {**record, "model_checksums_sha256": _sha256(tmp / MODEL_DIR / CHECKSUMS_FILE)}
        (tmp / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def locate(directory: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The model artifact in ``directory`` and its cross-checked training record.

    ``directory`` is a ``privrank train`` directory (``model/`` and ``training.json``) or a bare
    model directory (``model.json`` inside; no record). The record's ``model_checksums_sha256``
    must be the SHA-256 of the artifact's checksum list; the files themselves are verified
    against that list when the model is loaded (:meth:`Recommender.load`).

    Raises:
        ArtifactError: Neither layout, a missing or malformed training record, or a model that
            is not the one its training record describes.
    """
    directory = Path(directory)
    if (directory / MODEL_FILE).is_file():
        return directory, None
    model_path = directory / MODEL_DIR
    if not (model_path / MODEL_FILE).is_file():
        raise ArtifactError(
            f"{directory} is not a model directory: expected {MODEL_FILE} (a saved model) or "
            f"{MODEL_DIR}/{MODEL_FILE} and {TRAINING_FILE} (a `privrank train` output)"
        )
    path = directory / TRAINING_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{directory} is not a `privrank train` directory: {TRAINING_FILE} is missing"
        )
    record = _read_record(path)
    listing = model_path / CHECKSUMS_FILE
    if not listing.is_file() or record.get("model_checksums_sha256") != _sha256(listing):
        raise ArtifactError(
            f"{model_path} is not the model its {TRAINING_FILE} describes (its checksum list "
            "changed since `privrank train`)"
        )
    return model_path, record


def read_model_dir(directory: str | Path) -> TrainedModel:
    """Read and verify a ``privrank train`` directory or a bare model directory.

    Raises:
        ArtifactError: See :func:`locate`; also a file whose checksum changed.
    """
    model_path, record = locate(directory)
    return TrainedModel(Path(directory), record, Recommender.load(model_path), model_path)


def load_trained(directory: str | Path) -> TrainedModel:
    """Read a ``privrank train`` directory, verifying the model against its training record.

    Raises:
        ArtifactError: Not such a directory, a malformed record, or a model whose files changed
            since training.
    """
    directory = Path(directory)
    if not (directory / TRAINING_FILE).is_file():
        raise ArtifactError(
            f"{directory} is not a `privrank train` directory: {TRAINING_FILE} is missing"
        )
    return read_model_dir(directory)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise TypeError("expected a JSON object")
        if record.get("format") != FORMAT or record.get("version") != VERSION:
            raise ArtifactError(f"{path}: not a training record of version {VERSION}")
        for section, key in (("data", "train_fingerprint"), ("fit", "history_mode")):
            if not isinstance(record[section][key], str):
                raise TypeError(f"{section}.{key} must be a string")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: malformed training record: {exc}") from exc
    return record


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
