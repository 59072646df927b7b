"""A gradient-boosted click model (LightGBM) saved in LightGBM's own text format.

:class:`GBDTClickModel` fits LightGBM's binary objective on categorical and numeric feature
columns and answers :class:`~privrank.ranking.click_scorer.ClickScorer`'s ``predict_ctr``.

**Calibration.** LightGBM's log-loss fit is calibrated on the labels it was trained on. When the
labels were randomised by binary randomised response with keep probability q (label-DP with a
uniform prior, :mod:`privrank.privacy.label_dp`), a noisy label's mean is
:math:`E[\\tilde y \\mid x] = (1-q) + (2q-1)\\,p(x)`, so the model's output is mapped back by
:math:`p = (\\tilde p - (1-q)) / (2q-1)`, clipped to [0, 1] (``label_keep``). This inverse is
exact only for a uniform prior; a model trained with a data-dependent prior (multi-stage
RRWithPrior) keeps ``label_keep = None`` and its scores rank but are not calibrated.

**Streamed fit.** :meth:`GBDTClickModel.fit_chunks` builds LightGBM's binned ``Dataset`` from
the parts of a streamed log (:class:`~privrank.data.ad_log_stream.AdLogChunk`) through
``lightgbm.Sequence``: LightGBM samples rows (in increasing order) to choose the bins, then
pushes the rows part by part; one part's float matrix is held at a time (a one-part cache), so
the raw matrix of all rows never exists, only LightGBM's binned form (one or two bytes a value).
Each part is read twice (once to sample, once to push).

**Saved form.** ``model.txt`` (LightGBM's text model: no pickle) and ``click_model.json`` (the
config, the feature names, the calibration, the SHA-256 of ``model.txt``), written atomically;
:meth:`GBDTClickModel.load` refuses a model whose checksum does not match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from privrank.atomic import atomic_directory
from privrank.data.ad_log_stream import AdLogChunk
from privrank.errors import ArtifactError, ConfigError, NotTrainedError

__all__ = ["GBDTClickConfig", "GBDTClickModel"]

_MODEL_FILE = "model.txt"
_META_FILE = "click_model.json"
_KIND = "privrank-gbdt-click-model"
#: Largest batch scored on one thread (see :meth:`GBDTClickModel.predict_raw`).
SMALL_BATCH = 10_000


class GBDTClickConfig(BaseModel):
    """Hyper-parameters of the LightGBM click model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_estimators: int = Field(default=200, ge=1, le=100_000)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    num_leaves: int = Field(default=63, ge=2, le=131_072)
    min_data_in_leaf: int = Field(default=200, ge=1)
    max_cat_to_onehot: int = Field(default=8, ge=1)
    cat_smooth: float = Field(default=10.0, ge=0)
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=2, ge=1)


class GBDTClickModel:
    """LightGBM click model over named feature columns (see the module docstring).

    Args:
        feature_names: Columns, in order.
        categorical: The columns LightGBM treats as categorical (non-negative int codes).
        config: Hyper-parameters.
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        categorical: Sequence[str] = (),
        config: GBDTClickConfig | None = None,
    ) -> None:
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        unknown = set(categorical) - set(self.feature_names)
        if unknown:
            raise ConfigError(
                f"GBDTClickModel: categorical columns not among the features: {sorted(unknown)}"
            )
        self.categorical: tuple[str, ...] = tuple(categorical)
        self.config = config or GBDTClickConfig()
        self.label_keep: float | None = None
        self._booster: Any = None

    def _matrix(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = [name for name in self.feature_names if name not in features]
        if missing:
            raise ConfigError(f"GBDTClickModel: missing feature columns {missing}")
        return np.column_stack(
            [np.asarray(features[name], dtype=np.float64) for name in self.feature_names]
        )

    def fit(
        self,
        features: Mapping[str, np.ndarray],
        labels: np.ndarray,
        *,
        label_keep: float | None = None,
        soft_labels: bool = False,
    ) -> GBDTClickModel:
        """Fit on (n,) 0/1 ``labels``; ``label_keep`` is q of the randomised response that made
        them (``None``: true labels, or labels from a data-dependent prior). ``soft_labels``:
        the labels are probabilities in [0, 1] (label-DP posteriors), fitted with LightGBM's
        ``cross_entropy`` objective (the same log loss, with fractional targets)."""
        import lightgbm as lgb

        if label_keep is not None and not 0.5 < label_keep <= 1.0:
            raise ConfigError(f"GBDTClickModel: label_keep must be in (0.5, 1]. Got {label_keep}")
        if soft_labels and label_keep is not None:
            raise ConfigError("GBDTClickModel: soft labels are not randomised responses")
        targets = np.asarray(labels, dtype=np.float64)
        if soft_labels and targets.size and not (targets.min() >= 0 and targets.max() <= 1):
            raise ConfigError("GBDTClickModel: soft labels must be probabilities in [0, 1]")
        params = self._params(soft_labels)
        data = lgb.Dataset(
            self._matrix(features),
            label=targets,
            feature_name=list(self.feature_names),
            categorical_feature=list(self.categorical),
            free_raw_data=True,
        )
        self._booster = lgb.train(params, data, num_boost_round=self.config.n_estimators)
        self.label_keep = label_keep
        return self

    def _params(self, soft_labels: bool) -> dict[str, Any]:
        c = self.config
        return {
            "objective": "cross_entropy" if soft_labels else "binary",
            "learning_rate": c.learning_rate,
            "num_leaves": c.num_leaves,
            "min_data_in_leaf": c.min_data_in_leaf,
            "max_cat_to_onehot": c.max_cat_to_onehot,
            "cat_smooth": c.cat_smooth,
            "seed": c.seed,
            "num_threads": c.threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def fit_chunks(
        self, chunks: Sequence[AdLogChunk], *, label_keep: float | None = None
    ) -> GBDTClickModel:
        """Fit on the rows of streamed parts (see "Streamed fit"), with each part's labels.

        The same model as :meth:`fit` on the rows concatenated (the same sample of rows picks
        the bins), without holding their feature matrix.
        """
        import lightgbm as lgb

        if label_keep is not None and not 0.5 < label_keep <= 1.0:
            raise ConfigError(f"GBDTClickModel: label_keep must be in (0.5, 1]. Got {label_keep}")
        names = self.feature_names
        cache: dict[int, np.ndarray] = {}

        class _Part(lgb.Sequence):  # type: ignore[misc]
            def __init__(self, index: int, chunk: AdLogChunk) -> None:
                self.index, self.chunk = index, chunk
                self.batch_size = max(len(chunk), 1)

            def __len__(self) -> int:
                return len(self.chunk)

            def __getitem__(self, rows: Any) -> np.ndarray:
                if self.index not in cache:
                    cache.clear()  # one part at a time
                    columns = self.chunk.load(names)
                    cache[self.index] = np.column_stack(
                        [columns[name].astype(np.float64) for name in names]
                    )
                return cache[self.index][rows]

        parts = [_Part(i, chunk) for i, chunk in enumerate(chunks) if len(chunk)]
        labels = np.concatenate([chunk.labels for chunk in chunks]).astype(np.float64)
        data = lgb.Dataset(
            parts,
            label=labels,
            feature_name=list(names),
            categorical_feature=list(self.categorical),
            free_raw_data=True,
        )
        self._booster = lgb.train(
            self._params(False), data, num_boost_round=self.config.n_estimators
        )
        cache.clear()
        self.label_keep = label_keep
        return self

    def predict_raw(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(label = 1) as the model learnt it (of the noisy labels, when they were noisy).

        Batches of at most :data:`SMALL_BATCH` rows (a served request) are scored on one
        thread: starting LightGBM's OpenMP threads costs more than they save on a hundred rows
        (measured p50 24 ms with the default threads against 1 ms with one, on a loaded 2-core
        machine; BENCHMARKS.md, "Ads serving").
        """
        if self._booster is None:
            raise NotTrainedError("GBDTClickModel is not fitted; call fit or load first")
        matrix = self._matrix(features)
        threads = 1 if matrix.shape[0] <= SMALL_BATCH else self.config.threads
        return np.asarray(self._booster.predict(matrix, num_threads=threads), dtype=np.float64)

    def predict_ctr(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Calibrated P(click) (the randomised-response inverse applied when it is known)."""
        raw = self.predict_raw(features)
        if self.label_keep is None or self.label_keep == 1.0:
            return raw
        q = self.label_keep
        return np.clip((raw - (1.0 - q)) / (2.0 * q - 1.0), 0.0, 1.0)

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.txt`` and ``click_model.json`` into ``directory`` atomically."""
        if self._booster is None:
            raise NotTrainedError("GBDTClickModel is not fitted; nothing to save")
        directory = Path(directory)
        text = self._booster.model_to_string()
        meta = {
            "kind": _KIND,
            "feature_names": list(self.feature_names),
            "categorical": list(self.categorical),
            "config": self.config.model_dump(),
            "label_keep": self.label_keep,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            **dict(extra or {}),
        }
        with atomic_directory(directory) as tmp:
            (tmp / _MODEL_FILE).write_text(text)
            (tmp / _META_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> GBDTClickModel:
        """Load a saved model, checking its checksum.

        Raises:
            ArtifactError: Not a click-model directory, or ``model.txt`` altered.
        """
        import lightgbm as lgb

        directory = Path(directory)
        try:
            meta = json.loads((directory / _META_FILE).read_text())
            text = (directory / _MODEL_FILE).read_text()
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: not a click-model directory ({exc})") from exc
        if meta.get("kind") != _KIND:
            raise ArtifactError(f"{directory / _META_FILE}: not a {_KIND}")
        if hashlib.sha256(text.encode()).hexdigest() != meta.get("sha256"):
            raise ArtifactError(f"{directory / _MODEL_FILE}: checksum mismatch (altered file)")
        model = cls(meta["feature_names"], meta["categorical"], GBDTClickConfig(**meta["config"]))
        model._booster = lgb.Booster(model_str=text)
        model.label_keep = meta.get("label_keep")
        return model

    @staticmethod
    def metadata(directory: str | Path) -> dict[str, Any]:
        """The saved ``click_model.json`` (guarantee and training record included)."""
        return dict(json.loads((Path(directory) / _META_FILE).read_text()))
