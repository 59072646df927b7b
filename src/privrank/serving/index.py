"""FAISS retrieval for factor models: top-k by inner product without scoring every item.

A *factor model* scores ``s(u, i) = w_u · h_i (+ b_i)`` (iALS, BPR, ...: it has
``user_factors_`` and ``item_factors_``, optionally ``item_bias_``, and folds histories in with
``fold_in``). A bias is folded into the vectors as one extra dimension (``[w, 1] · [h, b]``), so
the index answers exactly the model's scores.

Below ``exact_threshold`` items the index is exact (``IndexFlatIP``: the same top-k as the
model). Above it, an HNSW graph (``IndexHNSWFlat``, inner product) answers approximately; its
recall@k against exact search on a sample of the model's own users is measured when it is built
and reported in :class:`IndexReport` (and in ``GET /v1/models``).

Searches run on one OpenMP thread: a server answers many requests at once on its own threads,
and FAISS's per-query fan-out over OpenMP threads costs far more than it saves there (one query
over 25k × 64 items took 40 ms at the median with the default threads on two busy cores, 0.4 ms
with one). OpenMP's thread count belongs to the calling thread, so every search sets it. Building
uses every core.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from privrank.errors import ConfigError
from privrank.models import Query
from privrank.models.base import top_k

__all__ = ["FactorIndex", "IndexReport", "exact_top_k", "is_factor_model"]

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "exact", "hnsw", "off"]


def is_factor_model(model: Any) -> bool:
    """Whether ``model`` scores by inner products of user and item factors."""
    return (
        getattr(model, "user_factors_", None) is not None
        and getattr(model, "item_factors_", None) is not None
        and callable(getattr(model, "fold_in", None))
    )


@dataclass(frozen=True)
class IndexReport:
    """How an index was built and how good it is.

    Attributes:
        kind: ``exact`` or ``hnsw``.
        n_items: Items indexed.
        dim: Vector dimension (factors, plus one with an item bias).
        build_s: Seconds to build.
        recall_k: The ``k`` of the recall check.
        recall: Mean recall@k against exact search on sampled users (1.0 for ``exact``).
        recall_queries: Users in the check.
    """

    kind: str
    n_items: int
    dim: int
    build_s: float
    recall_k: int
    recall: float
    recall_queries: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item positions by inner product (ties: lower position), ``(n, k)``."""
    best, _ = top_k(queries @ items.T, k)
    return best


class FactorIndex:
    """A FAISS index over a factor model's item vectors.

    Build one with :meth:`build`; query with :meth:`query_vectors` and :meth:`search`.
    """

    def __init__(self, index: Any, report: IndexReport, has_bias: bool) -> None:
        import faiss

        self._faiss = faiss
        self._index = index
        self.report = report
        self.has_bias = has_bias

    @classmethod
    def build(
        cls,
        model: Any,
        *,
        kind: IndexKind = "auto",
        exact_threshold: int = 100_000,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
        recall_k: int = 10,
        recall_queries: int = 200,
        seed: int = 0,
    ) -> FactorIndex | None:
        """Index ``model``'s items, or ``None`` when it is not a factor model or ``kind`` is
        ``off``.

        Raises:
            ConfigError: An unknown ``kind``, or FAISS missing when ``kind`` asks for it.
        """
        if kind not in ("auto", "exact", "hnsw", "off"):
            raise ConfigError(f"index kind must be auto, exact, hnsw or off. Got {kind!r}")
        if kind == "off" or not is_factor_model(model):
            return None
        try:
            import faiss
        except ImportError as exc:
            if kind == "auto":
                log.info("faiss is not installed: scoring every item exactly instead")
                return None
            raise ConfigError("the retrieval index needs faiss: pip install faiss-cpu") from exc
        items = _item_vectors(model)
        if not _agrees_with_model(model, items):
            log.warning(
                "%s has factors but does not score by their inner product: no index",
                type(model).__name__,
            )
            return None
        n, dim = items.shape
        chosen = ("exact" if n <= exact_threshold else "hnsw") if kind == "auto" else kind
        started = time.perf_counter()
        faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
        if chosen == "exact":
            index = faiss.IndexFlatIP(dim)
        else:
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        index.add(items)
        faiss.omp_set_num_threads(1)
        build_s = time.perf_counter() - started
        has_bias = getattr(model, "item_bias_", None) is not None
        built = cls(index, IndexReport(chosen, n, dim, build_s, 0, 1.0, 0), has_bias)
        recall, sampled, k = built._recall(model, items, recall_k, recall_queries, seed)
        built.report = IndexReport(chosen, n, dim, build_s, k, recall, sampled)
        log.info(
            "built a %s index of %d items (dim %d) in %.2fs; recall@%d vs exact = %.4f on %d users",
            chosen,
            n,
            dim,
            build_s,
            k,
            recall,
            sampled,
        )
        return built

    def _recall(self, model, items, k, queries, seed) -> tuple[float, int, int]:
        users = np.asarray(model.user_factors_)
        if users.shape[0] == 0:
            return 1.0, 0, 0
        k = min(k, items.shape[0])
        rng = np.random.default_rng(seed)
        rows = rng.choice(users.shape[0], size=min(queries, users.shape[0]), replace=False)
        vectors = self._with_bias(np.ascontiguousarray(users[rows], dtype=np.float32))
        exact = exact_top_k(vectors, items, k)
        found, _ = self.search(vectors, k)
        hits = [len(set(e) & set(f[f >= 0])) for e, f in zip(exact, found, strict=True)]
        return float(np.mean(hits) / k), len(rows), k

    def _with_bias(self, vectors: np.ndarray) -> np.ndarray:
        if not self.has_bias:
            return vectors
        ones = np.ones((vectors.shape[0], 1), dtype=np.float32)
        return np.ascontiguousarray(np.hstack([vectors, ones]))

    def query_vectors(self, model: Any, query: Query) -> np.ndarray:
        """The query vectors of known users (their factors) or histories (folded in)."""
        if query.is_users:
            vectors = np.asarray(model.user_factors_)[query.user_codes]
        else:
            vectors = model.fold_in(query)
        return self._with_bias(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item codes and scores per query vector (``-1`` pads missing results)."""
        k = min(k, self.report.n_items)
        # OpenMP's thread count is per calling thread: set it on every (worker) thread.
        self._faiss.omp_set_num_threads(1)
        scores, codes = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return codes.astype(np.int64), scores


def _agrees_with_model(model: Any, items: np.ndarray, sample: int = 8) -> bool:
    """Whether inner products of the vectors reproduce the model's own scores."""
    lengths = np.diff(np.asarray(model.history_indptr_))
    users = np.flatnonzero(lengths > 0)[:sample]
    if users.size == 0:
        return True
    vectors = np.asarray(model.user_factors_, dtype=np.float32)[users]
    if items.shape[1] == vectors.shape[1] + 1:
        vectors = np.hstack([vectors, np.ones((users.size, 1), dtype=np.float32)])
    if vectors.shape[1] != items.shape[1]:
        return False
    expected = model.score(Query.users(users))
    return bool(np.allclose(vectors @ items.T, expected, rtol=1e-3, atol=1e-4))


def _item_vectors(model: Any) -> np.ndarray:
    items = np.asarray(model.item_factors_, dtype=np.float32)
    bias = getattr(model, "item_bias_", None)
    if bias is not None:
        items = np.hstack([items, np.asarray(bias, dtype=np.float32).reshape(-1, 1)])
    return np.ascontiguousarray(items)
