r"""The CTR ranker contract: fit with early stopping on validation, predict_proba, save/load.

A ranker is a configured object (a pydantic :class:`CTRConfig`, ``extra="forbid"``, validated
at construction) that learns :math:`P(\text{click} \mid x)` from field-aware rows:

- ``fit(train, validation, options)`` → ``self``: fits the feature vocabulary
  (:class:`~privrank.data.features.FeatureEncoder`) on ``train`` only, trains the model with
  early stopping on the validation log loss (keeping the best epoch), then fits the post-hoc
  calibration (:mod:`privrank.ranking.ctr.calibration`) on the validation predictions.
  ``train``/``validation`` are :class:`~privrank.data.features.CTRFrame` rows or, for data too
  large for Arrow strings, :class:`~privrank.data.features.FeatureTable` rows already encoded
  with one vocabulary; a ranker with ``supports_streaming`` also trains on a
  :class:`~privrank.data.ad_log_stream.ChunkedFeatureTable` (rows read part by part, never held
  together; validation stays a ``FeatureTable``). ``options``
  (:class:`~privrank.models.FitOptions`) carries the seed, threads and a progress callback
  (one :class:`~privrank.models.FitProgress` per epoch with the training loss and the validation
  log loss and AUC).
- ``predict_proba(rows)`` → ``[n]`` calibrated click probabilities; ``predict_raw(rows)`` the
  model's own.
- ``save(dir)`` / :func:`load_ranker`: JSON + safetensors (+ a peer's native text model), every
  file checksummed (:mod:`privrank.ranking.ctr._artifact`); no pickle.

The validation part is used twice, for early stopping and then for calibration; it never holds
test rows. No ranker here trains with differential privacy yet (``supports_privacy = False``);
a privacy spec in ``options`` is refused rather than ignored.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from privrank.data._config import FrozenConfig
from privrank.data.ad_log_stream import ChunkedFeatureTable
from privrank.data.features import CTRFrame, FeatureEncoder, FeatureTable, FeatureVocabulary
from privrank.errors import ConfigError, NotTrainedError
from privrank.models import FitOptions, FitProgress
from privrank.ranking.ctr._artifact import read_ranker_dir, write_ranker_dir
from privrank.ranking.ctr.calibration import Calibrator, fit_calibrator

__all__ = ["CTRConfig", "CTRRanker", "Rows"]

#: What a ranker fits on and scores: raw rows, or rows already encoded.
Rows = CTRFrame | FeatureTable


class CTRConfig(FrozenConfig):
    """Options shared by every CTR ranker.

    Attributes:
        hash_buckets: Hashed buckets per field for values unseen in training.
        min_count: Training occurrences a value needs for its own code.
        calibration: Post-hoc calibration fitted on the validation predictions: ``isotonic``
            (pool-adjacent-violators), ``platt`` (logistic on the logit) or ``none``.
    """

    hash_buckets: int = Field(default=8, ge=1)
    min_count: int = Field(default=1, ge=1)
    calibration: Literal["isotonic", "platt", "none"] = "isotonic"


class CTRRanker(ABC):
    """Base class of every CTR ranker (see the module docstring).

    Subclasses set ``name``, ``Config`` and implement :meth:`_fit`, :meth:`_predict`,
    :meth:`_state` and :meth:`_restore`.

    Attributes:
        vocabulary_: The feature vocabulary fitted on train.
        calibrator_: The fitted calibration.
        history_: One dict per epoch (loss, validation log loss and AUC), when iterative; a
            seed ensemble's holds every member's epochs in turn, each with its ``member``.
        fit_seconds_: Wall time of the last fit.
    """

    name: ClassVar[str]
    Config: ClassVar[type[CTRConfig]]
    #: Whether the ranker trains with differential privacy (none does yet).
    supports_privacy: ClassVar[bool] = False
    #: Whether the (non-private) fit trains on a :class:`ChunkedFeatureTable` (mini-batches
    #: part by part) rather than needing every training row in memory.
    supports_streaming: ClassVar[bool] = False

    def __init__(self, config: CTRConfig | dict[str, Any] | None = None, **params: Any) -> None:
        if isinstance(config, self.Config) and not params:
            self.config = config
        else:
            base = config.model_dump() if isinstance(config, CTRConfig) else dict(config or {})
            self.config = self.Config.from_mapping(base | params)
        self.vocabulary_: FeatureVocabulary | None = None
        self.calibrator_: Calibrator | None = None
        self.history_: list[dict[str, float]] = []
        self.fit_seconds_: float | None = None

    # ------------------------------------------------------------------ the contract
    def fit(
        self,
        train: Rows | ChunkedFeatureTable,
        validation: Rows,
        options: FitOptions | None = None,
    ) -> CTRRanker:
        """Fit on ``train``, early-stopping and calibrating on ``validation``; returns self.

        Raises:
            ConfigError: A privacy spec the ranker cannot honour, streamed rows for a ranker
                without ``supports_streaming`` (or with a privacy spec), or parts that do not
                share one vocabulary.
        """
        options = options or FitOptions()
        if options.privacy is not None and not self.supports_privacy:
            raise ConfigError(f"{self.name} cannot train with differential privacy")
        if isinstance(train, ChunkedFeatureTable) and (
            not self.supports_streaming or options.privacy is not None
        ):
            raise ConfigError(
                f"{self.name} cannot train on streamed rows"
                + (" with differential privacy" if self.supports_streaming else "")
            )
        started = time.perf_counter()
        train_t, valid_t = self._encode_parts(train, validation)
        self.history_ = []

        def report(epoch: int, epochs: int, loss: float | None, **metrics: float) -> None:
            self.history_.append({"epoch": epoch, "loss": loss or float("nan"), **metrics})
            if options.progress is not None:
                options.progress(
                    FitProgress(
                        model=self.name,
                        epoch=epoch,
                        epochs=epochs,
                        loss=loss,
                        elapsed_s=time.perf_counter() - started,
                        metrics=metrics,
                    )
                )

        self._fit(train_t, valid_t, options, report)
        raw = self._predict(valid_t)
        self.calibrator_ = fit_calibrator(self.config.calibration, raw, valid_t.labels)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def predict_raw(self, rows: Rows) -> np.ndarray:
        """``[n]`` float64 uncalibrated click probabilities."""
        return self._predict(self.encode(rows))

    def predict_proba(self, rows: Rows) -> np.ndarray:
        """``[n]`` float64 calibrated click probabilities."""
        if self.calibrator_ is None:
            raise NotTrainedError(f"{self.name} is not fitted; call fit() first")
        return self.calibrator_.apply(self.predict_raw(rows))

    def encode(self, rows: Rows) -> FeatureTable:
        """``rows`` as codes of the fitted vocabulary.

        Raises:
            NotTrainedError: Not fitted.
            ConfigError: A feature table encoded with another vocabulary.
        """
        if self.vocabulary_ is None:
            raise NotTrainedError(f"{self.name} is not fitted; call fit() first")
        if isinstance(rows, FeatureTable):
            if rows.vocabulary != self.vocabulary_:
                raise ConfigError(f"{self.name}: the rows were encoded with another vocabulary")
            return rows
        return self.vocabulary_.transform(rows)

    def save(self, directory: str | Path) -> Path:
        """Write the ranker to ``directory`` atomically (see :mod:`._artifact`)."""
        if self.vocabulary_ is None or self.calibrator_ is None:
            raise NotTrainedError(f"{self.name} is not fitted; nothing to save")
        arrays, files, extra = self._state()
        header = {
            "ranker": self.name,
            "config": self.config.model_dump(mode="json"),
            "vocabulary": self.vocabulary_.to_dict(),
            "calibration": self.calibrator_.to_dict(),
            "history": self.history_,
            "fit_seconds": self.fit_seconds_,
            "state": extra,
        }
        return write_ranker_dir(Path(directory), header, arrays, files)

    @classmethod
    def _from_header(cls, header: dict[str, Any]) -> CTRRanker:
        ranker = cls(header["config"])
        ranker.vocabulary_ = FeatureVocabulary.from_dict(header["vocabulary"])
        ranker.calibrator_ = Calibrator.from_dict(header["calibration"])
        ranker.history_ = list(header.get("history", []))
        ranker.fit_seconds_ = header.get("fit_seconds")
        return ranker

    # ------------------------------------------------------------------ for subclasses
    @abstractmethod
    def _fit(self, train: Any, validation: FeatureTable, options: FitOptions,
             report: Any) -> None:  # fmt: skip
        """Train on encoded rows; call ``report(epoch, epochs, loss, **metrics)`` per epoch."""

    @abstractmethod
    def _predict(self, rows: FeatureTable) -> np.ndarray:
        """``[n]`` float64 uncalibrated probabilities of encoded rows."""

    @abstractmethod
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
        """The learned state: arrays, text files (name → content) and JSON facts."""

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray], files: dict[str, str],
                 extra: dict[str, Any]) -> None:  # fmt: skip
        """Rebuild the learned state from :meth:`_state`'s parts."""

    # ------------------------------------------------------------------ helpers
    def _encode_parts(
        self, train: Rows | ChunkedFeatureTable, validation: Rows
    ) -> tuple[FeatureTable | ChunkedFeatureTable, FeatureTable]:
        if isinstance(train, FeatureTable | ChunkedFeatureTable):
            if not isinstance(validation, FeatureTable) or (
                validation.vocabulary != train.vocabulary
            ):
                raise ConfigError("encoded train and validation must share one vocabulary")
            self.vocabulary_ = train.vocabulary
            return train, validation
        encoder = FeatureEncoder(
            hash_buckets=self.config.hash_buckets, min_count=self.config.min_count
        )
        self.vocabulary_ = encoder.fit(train)
        valid = self.encode(validation)
        return self.vocabulary_.transform(train), valid


def load_ranker(directory: str | Path, registry: dict[str, type[CTRRanker]]) -> CTRRanker:
    """Read a ranker directory (checksums verified first) with the class its header names.

    Raises:
        ArtifactError: Missing, tampered or unknown ranker.
    """
    from privrank.errors import ArtifactError

    header, arrays, files = read_ranker_dir(Path(directory))
    cls = registry.get(header.get("ranker", ""))
    if cls is None:
        raise ArtifactError(f"{directory}: unknown ranker {header.get('ranker')!r}")
    ranker = cls._from_header(header)
    ranker._restore(arrays, files, header.get("state", {}))
    return ranker
