r"""Personalised catalogue search: retrieval by BM25 + embeddings, re-ranked with the history.

**Stages.** (1) *Retrieval*: every item is scored by BM25 and by embedding cosine and the two
rankings are fused by reciprocal rank (:class:`~privrank.ranking.search._catalogue.
CatalogueIndex`); the top ``candidates`` (items of the history excluded when asked) go on.
(2) *Features* of each candidate (:mod:`privrank.ranking.search._features`): the retrieval
scores, popularity, and, when a history is given, its content similarity and a collaborative
model's score. (3) *Ranking*: a LambdaMART model (:func:`~privrank.ranking.search._ranker.
fit_lambdarank`) orders the candidates. Without a history, or with ``personalised=False``, the
ranker sees the query features only.

**Training, never on test.** :meth:`PersonalisedSearch.fit` carves a validation part out of the
training interactions (a per-user random holdout, ``validation_fraction``, ``seed``), fits the
collaborative model on the rest, builds one search query per user from the validation items
(:func:`~privrank.ranking.search._queries.build_queries`), labels each query's candidates by
the user's relevant validation items and trains the ranker on those groups. The collaborative
model is then refitted on the whole training part for serving and evaluation.

**Privacy.** The ranker and the collaborative model are trained on interaction data without
differential privacy: a search model holds no privacy guarantee (the item text and the encoder
are public; the training users' histories are in the saved collaborative model, as in any
non-private privrank model).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from privrank.atomic import atomic_directory
from privrank.data._config import FrozenConfig
from privrank.data.interactions import Interactions
from privrank.data.item_text import ItemText
from privrank.data.splits import HoldoutSplit, split
from privrank.errors import ArtifactError, ConfigError, DataError
from privrank.models import Query, Recommender, create_model
from privrank.models.content_knn import item_embeddings, profile_vectors
from privrank.models.text_embedding import embed_texts
from privrank.ranking.search._catalogue import CatalogueIndex, CatalogueScores
from privrank.ranking.search._features import (
    PERSONAL_FEATURES,
    QUERY_FEATURES,
    candidate_features,
)
from privrank.ranking.search._queries import SearchQuery, build_queries
from privrank.ranking.search._ranker import fit_lambdarank, load_lambdarank

__all__ = ["PersonalisedSearch", "SearchConfig", "SearchResult"]

FORMAT_VERSION = 1
_HEADER = "search.json"
_ARRAYS = "arrays.safetensors"
_RANKER = "ranker.txt"
_CF = "cf"


class SearchConfig(FrozenConfig):
    """Settings of :class:`PersonalisedSearch`.

    Attributes:
        cf_model: The registered collaborative model whose scores are a feature (``ease``).
        cf_config: Its config.
        candidates: Items retrieved per query and re-ranked. The defaults of ``candidates``
            (200) and ``rounds`` (100) are the best of a 2 x 2 grid (100/200 x 100/300) by
            validation NDCG@10 on a carve of ML-100K's training part
            (``bench/bench_search.py``).
        personalised: Use the history features (``False``: the ranker sees the query
            features only, the unpersonalised learned ranker).
        validation_fraction: Share of each user's training items carved out to train the
            ranker.
        min_matches: Least number of catalogue items a training query's genres must match.
        rounds: Boosting rounds of the ranker.
        num_leaves: Leaves per tree.
        learning_rate: Shrinkage of each tree.
        min_data_in_leaf: Least rows per leaf.
        seed: Seed of the carve, of the training queries and of LightGBM.
    """

    cf_model: str = "ease"
    cf_config: dict[str, Any] = Field(default_factory=dict)
    candidates: int = Field(default=200, ge=10, le=5000)
    personalised: bool = True
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_matches: int = Field(default=20, ge=1)
    rounds: int = Field(default=100, ge=1, le=5000)
    num_leaves: int = Field(default=31, ge=2, le=1024)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    min_data_in_leaf: int = Field(default=20, ge=1)
    seed: int = Field(default=0, ge=0)


@dataclass(frozen=True)
class SearchResult:
    """Ranked results of a batch of queries.

    Attributes:
        items: ``(n_queries, k)`` item codes, best first (``-1``: fewer eligible items).
        scores: ``(n_queries, k)`` float32 scores of the final stage.
        timings: Seconds spent in each stage (``embed``, ``retrieve``, ``features``,
            ``rank``).
    """

    items: np.ndarray
    scores: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


class PersonalisedSearch:
    """Catalogue search over a trained model's items, personalised by the user's history.

    Attributes (after :meth:`fit` or :meth:`load`):
        item_ids_: External item ids, by code.
        texts_: The text of each item code.
        popularity_: Training users per item.
        cf_: The collaborative model, fitted on the whole training part.
        ranker_: The LightGBM booster.
        training_: Facts of the ranker's training (queries, groups, counts).
    """

    def __init__(self, config: SearchConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = SearchConfig()
        elif not isinstance(config, SearchConfig):
            config = SearchConfig.from_mapping(config)
        self.config: SearchConfig = config

    # ---------------------------------------------------------------- fitting
    def fit(self, train: Interactions, text: ItemText) -> PersonalisedSearch:
        """Build the catalogue index and train the ranker (see the module docstring).

        Raises:
            DataError: Too few training queries have a relevant candidate to learn from.
        """
        config = self.config
        rows = text.align(train.item_ids)
        self._set_catalogue(
            train.item_ids.to_pylist(),
            [text.texts[r] if r >= 0 else "" for r in rows.tolist()],
            item_embeddings(text, train),
        )
        self.popularity_ = train.item_counts().astype(np.float32)
        carve = split(train, HoldoutSplit(fraction=config.validation_fraction, seed=config.seed))
        cf_part = create_model(config.cf_model, config.cf_config).fit(carve.train)
        indptr, items = carve.test.sequences()
        queries, counts = build_queries(
            text, rows, indptr, items, seed=config.seed, min_matches=config.min_matches
        )
        fit_indptr, fit_items = carve.train.sequences()
        histories = [fit_items[fit_indptr[q.user] : fit_indptr[q.user + 1]] for q in queries]
        features, labels, groups = self._training_groups(queries, histories, cf_part)
        if len(groups) < 10:
            raise DataError(
                f"only {len(groups)} training queries have a relevant item among their "
                f"{config.candidates} candidates",
                field="candidates",
                value=config.candidates,
                expected="at least 10 such queries (more users, or more candidates)",
            )
        params = {
            "num_leaves": config.num_leaves,
            "learning_rate": config.learning_rate,
            "min_data_in_leaf": config.min_data_in_leaf,
        }
        booster = fit_lambdarank(
            features, labels, groups, params=params, rounds=config.rounds, seed=config.seed
        )
        self.ranker_ = booster
        self.cf_ = create_model(config.cf_model, config.cf_config).fit(train)
        self.training_ = counts | {
            "groups": len(groups),
            "rows": len(labels),
            "positives": int(labels.sum()),
        }
        return self

    def _set_catalogue(self, item_ids: list[Any], texts: list[str], embeddings: np.ndarray) -> None:
        self.item_ids_ = list(item_ids)
        self.texts_ = list(texts)
        self.embeddings_ = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.index_ = CatalogueIndex(self.texts_, self.embeddings_)

    def _training_groups(
        self, queries: list[SearchQuery], histories: list[np.ndarray], cf: Recommender
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        blocks, labels, groups = [], [], []
        for start in range(0, len(queries), 256):
            batch = queries[start : start + 256]
            batch_histories = histories[start : start + 256]
            catalogue = self._catalogue_scores([q.text for q in batch])
            candidates = self._candidates(catalogue, batch_histories, exclude_seen=True)
            features = self._features(catalogue, candidates, batch_histories, cf)
            for row, query in enumerate(batch):
                label = np.isin(candidates[row], query.relevant).astype(np.float32)
                if label.sum() == 0:
                    continue  # no relevant candidate: no gradient for LambdaMART
                blocks.append(features[row])
                labels.append(label)
                groups.append(len(label))
        if not blocks:
            width = len(QUERY_FEATURES) + (
                len(PERSONAL_FEATURES) if self.config.personalised else 0
            )
            return np.zeros((0, width), np.float32), np.zeros(0, np.float32), np.zeros(0, int)
        return np.concatenate(blocks), np.concatenate(labels), np.asarray(groups)

    # ---------------------------------------------------------------- stages
    def _catalogue_scores(self, texts: list[str]) -> CatalogueScores:
        unique = sorted(set(texts))
        vectors = embed_texts(unique, cache=False)
        position = {t: i for i, t in enumerate(unique)}
        query_vectors = vectors[[position[t] for t in texts]]
        return self.index_.scores(texts, query_vectors)

    def _candidates(
        self, catalogue: CatalogueScores, histories: Sequence[np.ndarray], *, exclude_seen: bool
    ) -> np.ndarray:
        fused = catalogue.rrf.astype(np.float64).copy()
        if exclude_seen:
            for row, history in enumerate(histories):
                fused[row, np.asarray(history, dtype=np.int64)] = -np.inf
        n = min(self.config.candidates, fused.shape[1])
        order = np.argsort(-fused, axis=1, kind="stable")[:, :n]
        taken = np.take_along_axis(fused, order, axis=1)
        return np.where(np.isfinite(taken), order, -1)

    def _features(
        self,
        catalogue: CatalogueScores,
        candidates: np.ndarray,
        histories: Sequence[np.ndarray],
        cf: Recommender,
    ) -> np.ndarray:
        safe = np.maximum(candidates, 0)
        if not self.config.personalised:
            return candidate_features(
                catalogue,
                safe,
                self.popularity_,
                profile_similarity=None,
                cf_scores=None,
                history_lengths=None,
            )
        query = Query.histories([np.asarray(h, dtype=np.int64) for h in histories])
        cf_scores = cf.score(query)
        profiles = profile_vectors(self.embeddings_, query.to_csr(len(self.item_ids_)))
        return candidate_features(
            catalogue,
            safe,
            self.popularity_,
            profile_similarity=profiles @ self.embeddings_.T,
            cf_scores=cf_scores,
            history_lengths=query.lengths().astype(np.float32),
        )

    # ---------------------------------------------------------------- searching
    def search(
        self,
        texts: Sequence[str],
        histories: Sequence[Sequence[int] | np.ndarray] | None = None,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        rerank: bool = True,
    ) -> SearchResult:
        """Top-``k`` item codes for each query text and (optional) history of item codes.

        Args:
            texts: The query texts.
            histories: One history of item codes per query (``None``: no history, i.e. an
                anonymous search; the ranker then sees an empty history).
            k: Results per query.
            exclude_seen: Leave the history's items out.
            rerank: Apply the ranker (``False``: the fused retrieval order, unpersonalised).
        """
        self._require_fitted()
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        texts = list(texts)
        if histories is None:
            histories = [np.zeros(0, dtype=np.int64) for _ in texts]
        if len(histories) != len(texts):
            raise ConfigError(f"{len(texts)} queries and {len(histories)} histories")
        hist = [np.asarray(h, dtype=np.int64) for h in histories]
        for position, history in enumerate(hist):
            bad = history[(history < 0) | (history >= len(self.item_ids_))]
            if bad.size:
                raise ConfigError(f"history {position} holds item code {int(bad[0])}, not an item")
        timings: dict[str, float] = {}
        started = time.perf_counter()
        unique = sorted(set(texts))
        vectors = embed_texts(unique, cache=False)
        position_of = {t: i for i, t in enumerate(unique)}
        timings["embed"] = time.perf_counter() - started
        started = time.perf_counter()
        catalogue = self.index_.scores(texts, vectors[[position_of[t] for t in texts]])
        candidates = self._candidates(catalogue, hist, exclude_seen=exclude_seen)
        timings["retrieve"] = time.perf_counter() - started
        rows = np.arange(len(texts))[:, None]
        if not rerank:
            scores = catalogue.rrf[rows, np.maximum(candidates, 0)]
        else:
            started = time.perf_counter()
            features = self._features(catalogue, candidates, hist, self.cf_)
            timings["features"] = time.perf_counter() - started
            started = time.perf_counter()
            flat = features.reshape(-1, features.shape[2])
            scores = self.ranker_.predict(flat, num_threads=1).reshape(candidates.shape)
            timings["rank"] = time.perf_counter() - started
        scores = np.where(candidates >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        items = np.take_along_axis(candidates, order, axis=1)
        top = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        return SearchResult(items=items, scores=top, timings=timings)

    def _require_fitted(self) -> None:
        if not hasattr(self, "ranker_"):
            from privrank.errors import NotTrainedError

            raise NotTrainedError("PersonalisedSearch is not trained: call fit() or load()")

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write the search model atomically: header JSON (config, item ids and texts,
        training facts, SHA-256 of every file), embeddings and popularity (safetensors), the
        ranker (LightGBM text) and the collaborative model (its own directory). No pickle."""
        from safetensors.numpy import save_file

        self._require_fitted()
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            save_file(
                {"embeddings": self.embeddings_, "popularity": self.popularity_},
                str(tmp / _ARRAYS),
            )
            (tmp / _RANKER).write_text(self.ranker_.model_to_string(), encoding="utf-8")
            self.cf_.save(tmp / _CF)
            header = {
                "format_version": FORMAT_VERSION,
                "config": self.config.model_dump(mode="json"),
                "item_ids": self.item_ids_,
                "texts": self.texts_,
                "training": self.training_,
                "sha256": {name: _sha256(tmp / name) for name in (_ARRAYS, _RANKER)},
            }
            (tmp / _HEADER).write_text(json.dumps(header), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> PersonalisedSearch:
        """Read a directory written by :meth:`save`, verifying every checksum first.

        Raises:
            ArtifactError: A missing file, a checksum mismatch or another format version.
        """
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            header = json.loads((directory / _HEADER).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: not a search model ({exc})") from exc
        if header.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{directory}: search model format {header.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}"
            )
        for name, expected in header["sha256"].items():
            if not (directory / name).is_file() or _sha256(directory / name) != expected:
                raise ArtifactError(f"{directory / name}: missing or its SHA-256 differs")
        model = cls(SearchConfig.from_mapping(header["config"]))
        arrays = load_file(str(directory / _ARRAYS))
        model._set_catalogue(header["item_ids"], header["texts"], arrays["embeddings"])
        model.popularity_ = arrays["popularity"]
        model.ranker_ = load_lambdarank((directory / _RANKER).read_text(encoding="utf-8"))
        model.cf_ = Recommender.load(directory / _CF)
        model.training_ = header["training"]
        if model.cf_.n_items_ != len(model.item_ids_):
            raise ArtifactError(f"{directory}: the collaborative model has another catalogue")
        return model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
