"""The model store: versioned model directories, atomic activation and rollback, hot swap.

Layout of a store root::

    root/
      versions/<version>/     a model directory (``Recommender.save``) or a ``privrank train``
                              directory (``model/`` + ``training.json``)
      ACTIVE.json             {"active": "<version>", "history": [previous versions, newest first]}

**Checksums.** A version is loaded with :meth:`Recommender.load`, which verifies the SHA-256 of
every file before parsing; a corrupted version raises :class:`~privrank.errors.ArtifactError` and
is never served.

**Atomic activation.** :meth:`ModelStore.activate` loads the new version first; only when it
loaded does it replace ``ACTIVE.json`` (temp file + :func:`os.replace`) and then swap the served
reference. A failure at any step leaves the previous version active and serving.

**Hot swap.** Requests take :attr:`ModelStore.current` once and use that :class:`ServedModel`
to the end, so a swap never disturbs a request in flight: it finishes on the old model while new
requests see the new one. Other server processes notice a changed ``ACTIVE.json`` through
:meth:`ModelStore.refresh` (the app polls it every second).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privrank.atomic import atomic_directory, atomic_file
from privrank.errors import ArtifactError, ConfigError
from privrank.serving.errors import ConflictError, NotFoundError, UnavailableError
from privrank.serving.ids import IdLookup
from privrank.serving.settings import AUTO_EXACT_THRESHOLD, DEFAULT_RECALL_FLOOR, ServeSettings

if TYPE_CHECKING:
    from privrank.serving.index import IndexKind

__all__ = ["IndexOptions", "ModelStore", "ServedModel", "VersionInfo"]

log = logging.getLogger(__name__)

POINTER_FILE = "ACTIVE.json"
VERSIONS_DIR = "versions"
_POINTER_FORMAT = "privrank.model-store"
_HISTORY_LIMIT = 50
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ServedModel:
    """A loaded, checksum-verified model version.

    Attributes:
        version: The version name.
        model: The :class:`~privrank.models.Recommender`.
        path: The directory it was loaded from.
        loaded_at: When it was loaded (UTC).
        training: The ``training.json`` record, when the version came from ``privrank train``.
        index: The :class:`~privrank.serving.index.FactorIndex` of a factor model, or ``None``.
        neighbours: The :class:`~privrank.serving.neighbours.NeighbourIndex` of an item-item
            model (ItemKNN, EASE), or ``None``.
        users: Fast lookups of the model's user ids (built at load).
        items: Fast lookups of the model's item ids (built at load).
    """

    version: str
    model: Any
    path: Path
    loaded_at: datetime
    training: dict[str, Any] | None = field(default=None, repr=False)
    index: Any = field(default=None, repr=False)
    users: IdLookup = field(init=False, repr=False)
    items: IdLookup = field(init=False, repr=False)
    neighbours: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", IdLookup(self.model.user_ids_))
        object.__setattr__(self, "items", IdLookup(self.model.item_ids_))

    @property
    def private(self) -> bool:
        """Whether the model claims differential privacy (then it is a release artifact: the
        store refuses a private model's training directory)."""
        return getattr(self.model, "privacy_guarantee_", None) is not None

    def describe(self) -> dict[str, Any]:
        """JSON facts about this version: model name, sizes, index, and its differential
        privacy guarantee (``privacy``: ``None`` for a model trained without DP)."""
        record = self.training or {}
        guarantee = self.model.privacy_guarantee_
        privacy = record.get("privacy") if guarantee is None else guarantee.to_dict()
        return {
            "version": self.version,
            "model": self.model.name,
            "n_items": int(self.model.n_items_),
            "n_users": int(self.model.n_users_),
            "loaded_at": self.loaded_at.isoformat(timespec="seconds"),
            "privacy": privacy,
            "trained_at": record.get("created_at"),
            **self.retrieval(),
        }

    def retrieval(self) -> dict[str, Any]:
        """How answers are computed: the FAISS index and neighbour matrix reports (with their
        recall checks), ``None`` where the model scores every item itself."""
        return {
            "index": None if self.index is None else self.index.report.as_dict(),
            "neighbours": None if self.neighbours is None else self.neighbours.report.as_dict(),
        }


@dataclass(frozen=True)
class VersionInfo:
    """A version on disk.

    Attributes:
        version: Its name.
        path: Its directory.
        model: The registry name of its model, read from ``model.json`` (unverified), if any.
        active: Whether it is the active version.
    """

    version: str
    path: Path
    model: str | None
    active: bool


@dataclass(frozen=True)
class IndexOptions:
    """How models are indexed at load: factor models get a FAISS index
    (:class:`~privrank.serving.index.FactorIndex`), item-item models a sparse neighbour matrix
    (:class:`~privrank.serving.neighbours.NeighbourIndex`).

    Attributes:
        kind: ``auto`` (exact up to ``exact_threshold`` items, HNSW above), ``exact``,
            ``hnsw``, ``ivf`` or ``off`` (every model scores every item itself).
        exact_threshold: Largest catalogue indexed exactly under ``auto``.
        recall_floor: Lowest recall@10 against exact scoring of an approximate structure.
        neighbours: Weights kept per item in the neighbour matrix (see
            :class:`~privrank.serving.settings.ServeSettings`).
    """

    kind: IndexKind = "auto"
    exact_threshold: int = AUTO_EXACT_THRESHOLD
    recall_floor: float = DEFAULT_RECALL_FLOOR
    neighbours: int | None = None

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> IndexOptions:
        """The options of a :class:`~privrank.serving.settings.ServeSettings`."""
        return cls(
            kind=settings.index,
            exact_threshold=settings.index_exact_threshold,
            recall_floor=settings.index_recall_floor,
            neighbours=settings.neighbours,
        )


def _load(version: str, directory: Path, options: IndexOptions | None = None) -> ServedModel:
    from privrank.workflow.model_dir import read_model_dir

    loaded = read_model_dir(directory)  # checksums and the training record's cross-check
    model, model_dir, record = loaded.model, loaded.model_path, loaded.record
    _refuse_private_training(model, directory)
    index = neighbours = None
    if options is not None and options.kind != "off":
        from privrank.serving.index import FactorIndex

        index = FactorIndex.build(
            model,
            kind=options.kind,
            exact_threshold=options.exact_threshold,
            recall_floor=options.recall_floor,
        )
        if index is None:
            neighbours = _neighbours(model, options)
    _warm_up(model)
    return ServedModel(
        version, model, model_dir, datetime.now(UTC), record, index, neighbours=neighbours
    )


def _warm_up(model: Any) -> None:
    """Do before a model serves what its first request would otherwise pay for.

    - Every model looks up one user id and one item id, which builds the dicts of its
      vocabularies (:class:`~privrank.models._code_index.CodeIndex`; Beauty's 22,363 users
      take a few milliseconds, a vocabulary of millions a second).
    - A two-stage model re-ranks one known user, so the first request does not pay for the
      first call of each stage, above all numba loading the compiled ranker's kernel. On
      Beauty's next-item two-stage the first re-rank of a fresh process took 390-586 ms
      (31-39 ms with LightGBM's own predict, before the kernel), later ones 5-8 ms
      (``bench/bench_two_stage_request_cpu.py``): at 300 requests/s, a queue of 100-odd
      requests behind the first.
    """
    import numpy as np

    from privrank.models import Query
    from privrank.ranking.two_stage import TwoStage

    if model.n_users_ > 0:
        model.user_codes(model.user_ids_[:1])
    if model.n_items_ > 0:
        model.item_codes(model.item_ids_[:1])
    if isinstance(model, TwoStage) and model.n_users_ > 0:
        model.rerank(Query.users(np.array([0])))


def _refuse_private_training(model: Any, directory: Path) -> None:
    """A private model is served only from its release artifact: its training directory keeps
    user ids and raw histories that its differential privacy guarantee does not cover, and
    serving would answer from them (``exclude_seen`` would rebuild any user's history)."""
    if model.privacy_guarantee_ is not None and not model.is_release_:
        raise ArtifactError(
            f"{directory} holds a private model's training directory: it keeps {model.n_users_:,} "
            "users' ids and raw histories, which its differential privacy guarantee does not "
            "cover, so it is not served. Serve its release artifact instead: "
            f"`privrank privacy release {directory} --out RELEASE_DIR`"
        )


def _neighbours(model: Any, options: IndexOptions) -> Any:
    """The sparse neighbour matrix of an item-item model, when ``options`` ask for one."""
    import scipy.sparse as sp

    from privrank.serving.neighbours import NeighbourIndex, item_item_matrix

    weights = item_item_matrix(model)
    if weights is None or options.neighbours == 0:
        return None
    if options.neighbours is None and not sp.issparse(weights):
        return None  # a dense model matrix (EASE) is pruned only when asked
    return NeighbourIndex.build(model, options.neighbours, recall_floor=options.recall_floor)


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION_PATTERN.match(version):
        raise ConfigError(
            "a model version must be 1-64 letters, digits, '_', '.' or '-' starting with a "
            f"letter or digit. Got {version!r}"
        )
    return version


def _version_key(name: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name))


class ModelStore:
    """Versioned models under ``root`` (or one fixed model, see :meth:`single`).

    Args:
        root: The store directory (created when missing).
        index: How factor models are indexed when loaded (``None``: never).
    """

    def __init__(self, root: str | Path, *, index: IndexOptions | None = None) -> None:
        self.root: Path | None = Path(root)
        self.index_options = index
        (self.root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        self._single: tuple[str, Path] | None = None
        self._current: ServedModel | None = None
        self._lock = threading.RLock()
        self._pointer_signature: tuple | None = None
        self._failed_signature: tuple | None = None

    @classmethod
    def single(
        cls,
        model_dir: str | Path,
        version: str | None = None,
        *,
        index: IndexOptions | None = None,
    ) -> ModelStore:
        """A store that serves one model directory and cannot switch versions.

        The version is called ``version``, else after the directory (``model`` when its name
        is not a valid version name).
        """
        store = cls.__new__(cls)
        path = Path(model_dir)
        if version is None:
            name = path.resolve().name
            version = name if _VERSION_PATTERN.match(name) else "model"
        store.root = None
        store.index_options = index
        store._single = (_check_version(version), path)
        store._current = None
        store._lock = threading.RLock()
        store._pointer_signature = None
        store._failed_signature = None
        return store

    # ---------------------------------------------------------------- paths and listing
    @property
    def pointer_path(self) -> Path | None:
        """``ACTIVE.json``, or ``None`` for a single-model store."""
        return None if self.root is None else self.root / POINTER_FILE

    def _versions_dir(self) -> Path:
        if self.root is None:
            raise ConflictError("a single-model store has no versions directory")
        return self.root / VERSIONS_DIR

    def _version_dir(self, version: str) -> Path:
        if self._single is not None:
            if version != self._single[0]:
                raise NotFoundError(f"no model version {version!r} (serving one fixed model)")
            return self._single[1]
        _check_version(version)
        path = self._versions_dir() / version
        if not path.is_dir():
            raise NotFoundError(f"no model version {version!r} in {self.root}")
        return path

    def version_names(self) -> list[str]:
        """Every version on disk, in natural order (``v2`` before ``v10``)."""
        if self._single is not None:
            return [self._single[0]]
        names = [
            p.name
            for p in self._versions_dir().iterdir()
            if p.is_dir() and _VERSION_PATTERN.match(p.name)
        ]
        return sorted(names, key=_version_key)

    def versions(self) -> list[VersionInfo]:
        """Every version on disk with its model name and whether it is active (served, or
        named by ``ACTIVE.json`` before :meth:`start`)."""
        active = self.active_version() or self.pointed_version()
        infos = []
        for name in self.version_names():
            path = self._version_dir(name)
            model = None
            for header in (path / "model.json", path / "model" / "model.json"):
                if header.is_file():
                    try:
                        model = json.loads(header.read_text(encoding="utf-8")).get("model")
                    except (OSError, ValueError, AttributeError):
                        model = None
                    break
            infos.append(VersionInfo(name, path, model, name == active))
        return infos

    def active_version(self) -> str | None:
        """The version being served (``None`` before :meth:`start`)."""
        current = self._current
        return None if current is None else current.version

    def pointed_version(self) -> str | None:
        """The version ``ACTIVE.json`` names (``None`` when there is none yet)."""
        if self._single is not None:
            return self._single[0]
        pointer = self._read_pointer()
        return None if pointer is None else pointer["active"]

    # ---------------------------------------------------------------- the pointer
    def _read_pointer(self) -> dict[str, Any] | None:
        path = self.pointer_path
        if path is None or not path.is_file():
            return None
        try:
            pointer = json.loads(path.read_text(encoding="utf-8"))
            if pointer.get("format") != _POINTER_FORMAT or not isinstance(pointer["active"], str):
                raise ValueError("not a model-store pointer")
            history = [v for v in pointer.get("history", []) if isinstance(v, str)]
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ArtifactError(f"{path}: unreadable active-version pointer: {exc}") from exc
        return {"active": pointer["active"], "history": history}

    def _write_pointer(self, active: str, history: list[str]) -> None:
        pointer = {
            "format": _POINTER_FORMAT,
            "active": active,
            "history": history[:_HISTORY_LIMIT],
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        path = self.pointer_path
        if path is None:
            raise ConflictError("a single-model store has no active-version pointer")
        with atomic_file(path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(pointer, indent=2) + "\n")
        self._pointer_signature = self._signature()

    def _signature(self) -> tuple | None:
        path = self.pointer_path
        if path is None:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    # ---------------------------------------------------------------- serving
    @property
    def current(self) -> ServedModel:
        """The model to answer with; take it once per request.

        Raises:
            UnavailableError: No model is loaded.
        """
        current = self._current
        if current is None:
            raise UnavailableError("no model is loaded yet")
        return current

    def start(self) -> ServedModel:
        """Load the active version (the newest version when no pointer exists yet).

        When the active version fails its checks, the versions before it in the history are
        tried in turn, so the last good version keeps serving.

        Raises:
            UnavailableError: The store holds no version.
            ArtifactError: No version could be loaded.
        """
        with self._lock:
            if self._single is not None:
                version, path = self._single
                self._current = _load(version, path, self.index_options)
                return self._current
            pointer = self._read_pointer()
            if pointer is None:
                names = self.version_names()
                if not names:
                    raise UnavailableError(
                        f"the model store {self.root} holds no version: add one first"
                    )
                return self.activate(names[-1])
            self._pointer_signature = self._signature()
            candidates = [pointer["active"], *pointer["history"]]
            errors = []
            for version in candidates:
                try:
                    self._current = _load(version, self._version_dir(version), self.index_options)
                except (ArtifactError, NotFoundError) as exc:
                    log.error("model version %s cannot be served: %s", version, exc)
                    errors.append(f"{version}: {exc}")
                    continue
                return self._current
            raise ArtifactError("no model version could be loaded: " + "; ".join(errors))

    def activate(self, version: str) -> ServedModel:
        """Serve ``version`` from now on (atomic; a bad version changes nothing).

        Raises:
            NotFoundError: No such version.
            ArtifactError: The version fails its checksums or cannot be loaded; the previous
                version keeps serving.
        """
        with self._lock:
            path = self._version_dir(version)
            served = _load(version, path, self.index_options)
            if self._single is None:
                pointer = self._read_pointer()
                previous = pointer["active"] if pointer else None
                history = pointer["history"] if pointer else []
                if previous is not None and previous != version:
                    history = [previous, *[v for v in history if v != previous]]
                history = [v for v in history if v != version]
                self._write_pointer(version, history)
            self._current = served
            log.info("model version %s is now active", version)
            return served

    def rollback(self) -> ServedModel:
        """Serve the version that was active before the current one.

        Versions deleted since, or failing their checksums, are skipped (and dropped from the
        history).

        Raises:
            ConflictError: No earlier version to return to.
        """
        with self._lock:
            pointer = self._read_pointer() if self._single is None else None
            if pointer is None or not pointer["history"]:
                raise ConflictError("there is no earlier model version to roll back to")
            history = list(pointer["history"])
            errors = []
            while history:
                version = history.pop(0)
                try:
                    served = _load(version, self._version_dir(version), self.index_options)
                except (ArtifactError, NotFoundError) as exc:
                    errors.append(f"{version}: {exc}")
                    continue
                self._write_pointer(version, history)
                self._current = served
                log.info("rolled back to model version %s", version)
                return served
            raise ConflictError("no earlier model version could be loaded: " + "; ".join(errors))

    def refresh(self) -> bool:
        """Follow ``ACTIVE.json`` when another process changed it.

        Returns:
            Whether a different version is now served. A version that fails to load is logged
            and the current one keeps serving.
        """
        if self._single is not None:
            return False
        signature = self._signature()
        if signature is None or signature in (self._pointer_signature, self._failed_signature):
            return False
        with self._lock:
            try:
                pointer = self._read_pointer()
                if pointer is None or pointer["active"] == self.active_version():
                    self._pointer_signature = signature
                    return False
                active = pointer["active"]
                served = _load(active, self._version_dir(active), self.index_options)
            except (ArtifactError, NotFoundError, ConfigError) as exc:
                self._failed_signature = signature
                log.error("keeping model version %s: %s", self.active_version(), exc)
                return False
            self._current = served
            self._pointer_signature = signature
            log.info("model version %s is now active (changed by another process)", served.version)
            return True

    # ---------------------------------------------------------------- adding versions
    def add(self, source: str | Path, version: str | None = None, *, activate: bool = False) -> str:
        """Copy a model directory into the store as a new version (verified first).

        Args:
            source: A model directory or a ``privrank train`` directory.
            version: The new version's name (default ``v<N+1>``).
            activate: Serve it at once.

        Returns:
            The version name.

        Raises:
            ConflictError: The version exists already, or this is a single-model store.
            ArtifactError: ``source`` is not a loadable model.
        """
        if self._single is not None:
            raise ConflictError("a single-model store cannot take new versions")
        source = Path(source)
        _load("candidate", source)
        if version is None:
            numbers = [int(n[1:]) for n in self.version_names() if re.fullmatch(r"v\d+", n)]
            version = f"v{max(numbers, default=0) + 1}"
        _check_version(version)
        destination = self._versions_dir() / version
        if destination.exists():
            raise ConflictError(f"model version {version!r} already exists in {self.root}")
        with atomic_directory(destination) as tmp:
            shutil.rmtree(tmp)
            shutil.copytree(source, tmp)
        if activate:
            self.activate(version)
        return version
