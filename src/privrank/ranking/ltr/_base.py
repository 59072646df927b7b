"""The learning-to-rank contract: fit on query groups, score rows, save and load.

A ranker is a configured object (a frozen pydantic :class:`RankerConfig`, ``extra="forbid"``,
validated at construction). :meth:`LTRRanker.fit` learns from a
:class:`~privrank.data.query_groups.QueryGroups` and an optional validation part (early stopping
and model selection use it, never a test part) and returns the ranker; :meth:`LTRRanker.score`
gives one float32 score per row (higher ranks first within a group).

**Persistence.** :meth:`LTRRanker.save` writes ``ranker.json`` (registry name, config, what the
fit learned about its input), ``arrays.safetensors`` (every learned array; LightGBM's model is its
own text format stored as bytes) and ``checksums.json`` (SHA-256 of both); :meth:`LTRRanker.load`
verifies the checksums before parsing anything. Nothing is pickled. The same arrays
(:meth:`LTRRanker.state`) are what a two-stage recommender embeds in its own model directory.

**Registry.** Rankers register under a name (``lambdamart``, ``listwise``) so configs and the CLI
build them by name (:func:`privrank.ranking.ltr.create_ranker`); a saved ranker loads with
:func:`privrank.ranking.ltr.load_ranker`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from privrank.atomic import atomic_directory
from privrank.config_errors import config_error
from privrank.data.query_groups import QueryGroups
from privrank.errors import ArtifactError, ConfigError, NotTrainedError
from privrank.privacy.spec import PrivacySpec

__all__ = [
    "LTRFitOptions",
    "LTRRanker",
    "RankerConfig",
    "read_ranker_files",
    "register_ranker",
    "registered_ranker",
]

RANKER_FORMAT = "privrank.ranker"
_HEADER, _ARRAYS, _CHECKSUMS = "ranker.json", "arrays.safetensors", "checksums.json"
_REGISTRY: dict[str, type[LTRRanker]] = {}
R = TypeVar("R", bound="LTRRanker")


class RankerConfig(BaseModel):
    """Base of every ranker's hyper-parameters (frozen; unknown keys are refused)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class LTRFitOptions(BaseModel):
    """How to run a ranker's fit.

    Attributes:
        seed: Seed of every random draw (initialisation, batching, bagging).
        threads: Threads of the numerical kernels (``0``: LightGBM's / torch's default).
        privacy: A user-level privacy spec (one query group is one user); rankers that cannot
            honour it refuse it.
        population: With ``privacy``: the users a private fit's Poisson batches are drawn from,
            when some of them have no query group (each such user is sampled like the others
            and contributes nothing); ``None``: the groups. At least the number of groups.
            It fixes the sampling rate and step count before the groups are built, so a caller
            can budget the fit from it (:meth:`ListwiseRanker.planned_releases`).
        progress: Called as ``progress(epoch, metrics)`` after each evaluated epoch/iteration.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=0, ge=0)
    privacy: PrivacySpec | None = None
    population: int | None = Field(default=None, ge=1)
    progress: Callable[[int, dict[str, float]], None] | None = None


def register_ranker(name: str) -> Callable[[type[R]], type[R]]:
    """Class decorator: make a ranker constructible by ``name`` (unique)."""

    def decorate(cls: type[R]) -> type[R]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"ranker name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered_ranker(name: str) -> type[LTRRanker] | None:
    """The ranker class registered under ``name`` so far (``None``: not yet imported)."""
    return _REGISTRY.get(name)


class LTRRanker(ABC):
    """Base class of the learning-to-rank models.

    Subclasses declare ``Config``, register a name and implement :meth:`_fit`, :meth:`_score`,
    :meth:`state` and :meth:`_set_state`.

    Attributes:
        config: The validated hyper-parameters.
        n_features_: Feature columns seen by the fit.
        feature_names_: Their names.
        info_: JSON facts of the fit (best iteration, validation NDCG, ...).
    """

    name: ClassVar[str] = "unregistered"
    Config: ClassVar[type[RankerConfig]] = RankerConfig
    supports_privacy: ClassVar[bool] = False
    config: RankerConfig

    def __init__(self, config: RankerConfig | Mapping[str, Any] | None = None, **params: Any):
        owner = type(self).__name__
        if isinstance(config, self.Config) and not params:
            self.config = config
            return
        base = config.model_dump() if isinstance(config, RankerConfig) else dict(config or {})
        try:
            self.config = self.Config(**(base | params))
        except ValidationError as exc:
            raise config_error(exc, owner, model=self.Config) from None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"

    @property
    def is_fitted(self) -> bool:
        """Whether the ranker was fitted or loaded."""
        return hasattr(self, "n_features_")

    def fit(
        self,
        train: QueryGroups,
        validation: QueryGroups | None = None,
        options: LTRFitOptions | None = None,
    ) -> Self:
        """Learn from ``train`` (replacing any earlier fit), selecting on ``validation``.

        Raises:
            ConfigError: A privacy spec for a ranker that cannot honour it, or a validation part
                with other feature columns.
        """
        options = LTRFitOptions() if options is None else options
        if options.privacy is not None and not self.supports_privacy:
            raise ConfigError(self._privacy_refusal())
        if validation is not None and validation.n_features != train.n_features:
            raise ConfigError(
                f"the validation part has {validation.n_features} feature columns, the training "
                f"part {train.n_features}"
            )
        if train.n_rows == 0:
            raise ConfigError(f"{type(self).__name__} needs at least one training row")
        for attribute in [a for a in vars(self) if a != "config"]:
            delattr(self, attribute)
        self.info_: dict[str, Any] = {}
        self._fit(train, validation, options)
        self.n_features_ = train.n_features
        self.feature_names_ = train.feature_names
        return self

    def _privacy_refusal(self) -> str:
        return (
            f"{type(self).__name__} cannot train with differential privacy; refusing rather "
            "than train without it"
        )

    def score(self, features: np.ndarray, threads: int | None = None) -> np.ndarray:
        """``(n_rows,)`` float32 scores of feature rows (``n_rows × n_features_``; float64 rows
        are kept in float64 for the model, anything else becomes float32).

        ``threads``: native threads this call may use (``None``: the library's default). A
        server scoring one request per call passes 1 (see :mod:`privrank.serving.reranked`);
        a ranker whose library has no per-call setting ignores it (the listwise ranker: torch's
        intra-op pool is process-wide)."""
        if not self.is_fitted:
            raise NotTrainedError(f"{type(self).__name__} is not trained: call fit() or load()")
        features = np.asarray(features)
        if features.dtype != np.float64:
            features = features.astype(np.float32)
        features = np.ascontiguousarray(features)
        if features.ndim != 2 or features.shape[1] != self.n_features_:
            raise ConfigError(
                f"{type(self).__name__} scores rows of {self.n_features_} features; got an "
                f"array of shape {features.shape}"
            )
        if features.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._score(features, threads), dtype=np.float32).ravel()

    # ---------------------------------------------------------------- persistence
    def header(self) -> dict[str, Any]:
        """What :meth:`save` writes to ``ranker.json`` (and a two-stage model embeds)."""
        return {
            "format": RANKER_FORMAT,
            "ranker": self.name,
            "config": self.config.model_dump(mode="json"),
            "n_features": self.n_features_,
            "feature_names": list(self.feature_names_),
            "info": self.info_,
        }

    @classmethod
    def from_state(cls, header: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> LTRRanker:
        """Rebuild a fitted ranker from :meth:`header` and :meth:`state`.

        Raises:
            ArtifactError: An unknown ranker, an invalid config or arrays that do not fit it.
        """
        name = header.get("ranker")
        if header.get("format") != RANKER_FORMAT or name not in _REGISTRY:
            raise ArtifactError(
                f"not a privrank ranker (format {header.get('format')!r}, {name!r})"
            )
        found = _REGISTRY[str(name)]
        if not issubclass(found, cls):
            raise ArtifactError(f"the ranker is a {name!r}, not a {cls.__name__}")
        try:
            ranker = found(found.Config.model_validate(header["config"]))
            ranker.n_features_ = int(header["n_features"])
            ranker.feature_names_ = tuple(header["feature_names"])
            ranker.info_ = dict(header.get("info") or {})
            ranker._set_state(dict(state))
        except (ConfigError, KeyError, ValueError, TypeError) as exc:
            raise ArtifactError(f"invalid {name!r} ranker state: {exc}") from exc
        return ranker

    def save(self, directory: str | Path) -> Path:
        """Write the ranker atomically (see the module docstring)."""
        if not self.is_fitted:
            raise NotTrainedError(f"{type(self).__name__} is not trained: nothing to save")
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            (tmp / _HEADER).write_text(json.dumps(self.header(), indent=2, sort_keys=True) + "\n")
            save_file({k: np.ascontiguousarray(v) for k, v in self.state().items()}, tmp / _ARRAYS)
            sums = {name: _sha256(tmp / name) for name in (_HEADER, _ARRAYS)}
            (tmp / _CHECKSUMS).write_text(json.dumps({"sha256": sums}, indent=2) + "\n")
        return directory

    # ---------------------------------------------------------------- to implement
    @abstractmethod
    def _fit(
        self, train: QueryGroups, validation: QueryGroups | None, options: LTRFitOptions
    ) -> None:
        """Learn the ranker's state."""

    @abstractmethod
    def _score(self, features: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Scores of validated float32 rows (``threads``: see :meth:`score`)."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """The learned arrays, by name."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` (raise ``ValueError`` on a mismatch)."""


def read_ranker_files(directory: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and arrays of a ranker directory, after verifying its checksums.

    Raises:
        ArtifactError: Missing, extra or modified files.
    """
    directory = Path(directory)
    try:
        recorded = json.loads((directory / _CHECKSUMS).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{directory} is not a ranker directory: {exc}") from exc
    present = {p.name for p in directory.iterdir()} - {_CHECKSUMS}
    if present != {_HEADER, _ARRAYS} or set(recorded) != {_HEADER, _ARRAYS}:
        raise ArtifactError(
            f"{directory} must hold exactly {_HEADER}, {_ARRAYS} and {_CHECKSUMS}; it holds "
            f"{', '.join(sorted(present | {_CHECKSUMS}))}"
        )
    for name in (_HEADER, _ARRAYS):
        if _sha256(directory / name) != recorded[name]:
            raise ArtifactError(f"{directory / name}: checksum mismatch (modified or corrupted)")
    try:
        header = json.loads((directory / _HEADER).read_text())
        state = load_file(directory / _ARRAYS)
    except (ValueError, SafetensorError) as exc:
        raise ArtifactError(f"cannot read ranker {directory}: {exc}") from exc
    return header, state


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
