"""FAISS retrieval for factor models: top-k by inner product without scoring every item.

A *factor model* (:class:`~privrank.models.capabilities.FactorModel`: iALS, BPR) scores
``s(q, i) = v_q · h_i (+ b_i)`` with its query vectors (``user_vectors``: known users' factors,
or histories folded in), item vectors (``item_vectors``) and optional item biases
(``item_biases``). A bias is folded into the vectors as one extra dimension
(``[v, 1] · [h, b]``), so the index answers exactly the model's scores.

Kinds (``--index``):

- ``exact``: ``IndexFlatIP``, every item scored; the same top-k as the model.
- ``hnsw``: ``IndexHNSWFlat`` (inner product), a navigable small-world graph; approximate.
- ``ivf``: ``IndexIVFFlat`` (inner product): k-means into ``nlist`` cells, a query scans the
  ``nprobe`` cells whose centroids have the largest inner product with it; approximate. By
  default ``nlist = 4·√n`` (at most ``n / 39``, FAISS's minimum of training points per cell)
  and ``nprobe = ⌈nlist / 16⌉``. The cells are built over the *Euclidean transform* of the
  item vectors (Bachrach et al., RecSys 2014): ``h̃ = [h, √(R² − ‖h‖²)]`` with ``R`` the
  largest item norm, and queries ``q̃ = [q, 0]``, so ``q̃ · h̃ = q · h`` (the scores are the
  model's) while every item has norm ``R``, which k-means cells can separate. Without it,
  factor models' item norms vary by orders of magnitude and a few long vectors' cells
  swallow the catalogue: on the benchmark's iALS model recall@10 at the default ``nprobe``
  was 0.17 (10k items) and 0.27 (30k) without the transform.
- ``auto``: exact up to ``exact_threshold`` items, HNSW above. The default threshold,
  :data:`~privrank.serving.settings.AUTO_EXACT_THRESHOLD` (20,000), comes from the bare
  single-query search times measured by ``bench/serving/index_search.py`` on the 2-core machine
  of BENCHMARKS.md ("Serving"): exact search is linear in the catalogue (0.14 ms at 10k items,
  0.33 ms at 30k, 1.1-1.9 ms at 100k with 64 factors) while HNSW stays at 0.05-0.09 ms. Below
  20k items exact search costs at most about a tenth of a request's end-to-end median (about
  2 ms, the HTTP stack), answers exactly and builds at once; above it, it grows into the
  dominant cost (at 100k items it saturated two workers at 250-490 requests/s).

**Recall check.** Every index is checked when it is built: recall@k of its answers against
exact search for a sample of the model's own users (``recall_queries``, 200 by default) is
reported in :class:`IndexReport` (``GET /readyz``, ``GET /v1/models`` and the log). An
approximate index below ``recall_floor`` first searches wider (HNSW ``efSearch`` doubled up to
16 times its start, at most 4096; IVF ``nprobe`` doubled up to ``nlist``, which scans every
cell); if it still misses the floor, ``auto`` falls back to
exact search (the report says why in ``fallback``) and an explicitly requested ``hnsw`` or
``ivf`` is refused with :class:`~privrank.serving.errors.IndexQualityError` (the model version
is not served).

Searches run on one OpenMP thread: a server answers many requests at once on its own threads,
and FAISS's per-query fan-out over OpenMP threads costs far more than it saves there (one query
over 25k × 64 items took 40 ms at the median with the default threads on two busy cores, 0.4 ms
with one). OpenMP's thread count belongs to the calling thread, so every search sets it. Building
uses every core.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from privrank.errors import ConfigError
from privrank.metrics.topk import top_k
from privrank.models import Query
from privrank.models.base import Recommender
from privrank.models.capabilities import FactorModel
from privrank.serving.errors import IndexQualityError
from privrank.serving.settings import AUTO_EXACT_THRESHOLD, DEFAULT_RECALL_FLOOR

__all__ = [
    "AUTO_EXACT_THRESHOLD",
    "DEFAULT_RECALL_FLOOR",
    "FactorIndex",
    "IndexReport",
    "exact_top_k",
    "is_factor_model",
    "ivf_parameters",
]

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "exact", "hnsw", "ivf", "off"]
KINDS = ("auto", "exact", "hnsw", "ivf", "off")

_HNSW_WIDEST = 16  # efSearch may grow to this multiple of its start (at most 4096)


def is_factor_model(model: Any) -> bool:
    """Whether ``model`` declares that it scores by inner products of user and item factors
    (:class:`~privrank.models.capabilities.FactorModel`)."""
    return isinstance(model, FactorModel)


def ivf_parameters(n_items: int) -> tuple[int, int]:
    """Default ``(nlist, nprobe)`` of an IVF index over ``n_items`` vectors.

    ``nlist = round(4·√n)``, capped at ``n / 39`` (FAISS wants at least 39 training points per
    centroid) and at least 1; ``nprobe = ⌈nlist / 16⌉``, so a query scans about 1/16 of the
    catalogue plus the centroids.
    """
    nlist = int(max(1, min(round(4 * math.sqrt(n_items)), n_items // 39)))
    return nlist, max(1, math.ceil(nlist / 16))


@dataclass(frozen=True)
class IndexReport:
    """How an index was built and how good it is.

    Attributes:
        kind: ``exact``, ``hnsw`` or ``ivf`` (what is served).
        requested: The kind asked for (``auto``, ``exact``, ``hnsw`` or ``ivf``).
        n_items: Items indexed.
        dim: Vector dimension (factors, plus one with an item bias).
        build_s: Seconds to build (every attempt, recall checks included).
        recall_k: The ``k`` of the recall check.
        recall: Mean recall@k against exact search on sampled users.
        recall_queries: Users in the check.
        recall_floor: The floor an approximate index had to reach.
        params: The served index's parameters (``ef_search``, ``nlist``, ``nprobe``, ...).
        fallback: Why ``auto`` fell back to exact search, or ``None``.
    """

    kind: str
    n_items: int
    dim: int
    build_s: float
    recall_k: int
    recall: float
    recall_queries: int
    requested: str = "auto"
    recall_floor: float = DEFAULT_RECALL_FLOOR
    params: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item positions by inner product (ties: lower position), ``(n, k)``."""
    return top_k(queries @ items.T, k, threads=1).items


def _recall_at_k(exact: np.ndarray, found: np.ndarray) -> float:
    hits = [
        len(set(e.tolist()) & set(f[f >= 0].tolist())) for e, f in zip(exact, found, strict=True)
    ]
    return float(np.mean(hits) / exact.shape[1]) if len(hits) else 1.0


class FactorIndex:
    """A FAISS index over a factor model's item vectors.

    Build one with :meth:`build` (from a model) or :meth:`from_vectors`; query with
    :meth:`query_vectors` and :meth:`search`.
    """

    def __init__(self, index: Any, report: IndexReport, has_bias: bool, keep: Any = None) -> None:
        import faiss

        self._faiss = faiss
        self._index = index
        self._keep = keep  # objects the index points into (the IVF quantizer)
        self.report = report
        self.has_bias = has_bias

    @classmethod
    def build(
        cls,
        model: Any,
        *,
        kind: IndexKind = "auto",
        exact_threshold: int = AUTO_EXACT_THRESHOLD,
        recall_floor: float = DEFAULT_RECALL_FLOOR,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
        nlist: int | None = None,
        nprobe: int | None = None,
        recall_k: int = 10,
        recall_queries: int = 200,
        seed: int = 0,
    ) -> FactorIndex | None:
        """Index ``model``'s items, or ``None`` when it is not a factor model or ``kind`` is
        ``off``.

        Raises:
            ConfigError: An unknown ``kind``, or FAISS missing when ``kind`` asks for it.
            IndexQualityError: An explicitly requested approximate index misses
                ``recall_floor``.
        """
        if kind not in KINDS:
            raise ConfigError(f"index kind must be auto, exact, hnsw, ivf or off. Got {kind!r}")
        if kind == "off" or not is_factor_model(model):
            return None
        try:
            import faiss  # noqa: F401
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
        has_bias = model.item_biases() is not None
        n_users = int(model.n_users_)
        rng = np.random.default_rng(seed)
        rows = rng.choice(n_users, size=min(recall_queries, n_users), replace=False)
        sample = _user_vectors(model, Query.users(np.sort(rows)))
        if has_bias:
            sample = np.hstack([sample, np.ones((sample.shape[0], 1), dtype=np.float32)])
        built = cls.from_vectors(
            items,
            sample,
            kind=kind,
            exact_threshold=exact_threshold,
            recall_floor=recall_floor,
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            nlist=nlist,
            nprobe=nprobe,
            recall_k=recall_k,
            seed=seed,
        )
        built.has_bias = has_bias
        r = built.report
        log.info(
            "built a %s index (asked: %s) of %d items (dim %d, %s) in %.2fs; recall@%d vs exact "
            "= %.4f on %d users (floor %.2f)%s",
            r.kind,
            r.requested,
            r.n_items,
            r.dim,
            r.params,
            r.build_s,
            r.recall_k,
            r.recall,
            r.recall_queries,
            r.recall_floor,
            f"; fell back: {r.fallback}" if r.fallback else "",
        )
        return built

    @classmethod
    def from_vectors(
        cls,
        items: np.ndarray,
        queries: np.ndarray,
        *,
        kind: str = "auto",
        exact_threshold: int = AUTO_EXACT_THRESHOLD,
        recall_floor: float = DEFAULT_RECALL_FLOOR,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
        nlist: int | None = None,
        nprobe: int | None = None,
        recall_k: int = 10,
        seed: int = 0,
    ) -> FactorIndex:
        """Index ``items`` (``n × dim``) and check recall@k on ``queries`` (``m × dim``, the
        vectors the index will be searched with).

        Raises:
            ConfigError: An unknown kind or out-of-range parameter.
            IndexQualityError: An explicit ``hnsw``/``ivf`` misses ``recall_floor``.
        """
        if kind not in KINDS or kind == "off":
            raise ConfigError(f"index kind must be auto, exact, hnsw or ivf. Got {kind!r}")
        if not 0.0 <= recall_floor <= 1.0:
            raise ConfigError(f"recall_floor must be in [0, 1]. Got {recall_floor!r}")
        items = np.ascontiguousarray(items, dtype=np.float32)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = items.shape[0]
        chosen = ("exact" if n <= exact_threshold else "hnsw") if kind == "auto" else kind
        k = min(recall_k, n)
        exact = exact_top_k(queries, items, k) if len(queries) else np.zeros((0, k), np.int64)
        started = time.perf_counter()
        built = cls._make(
            chosen, items, hnsw_m, ef_construction, ef_search, nlist, nprobe, seed, kind
        )
        recall = _recall_at_k(exact, built.search(queries, k)[0])
        while chosen != "exact" and recall < recall_floor and built._widen(ef_search):
            recall = _recall_at_k(exact, built.search(queries, k)[0])
        fallback = None
        if recall < recall_floor:
            message = (
                f"{chosen} recall@{k} = {recall:.4f} on {len(queries)} queries is below the "
                f"floor {recall_floor:.2f} (params {built._params()})"
            )
            if kind != "auto":
                raise IndexQualityError(
                    f"refusing to serve: the {message}; use --index exact, a wider index, or a "
                    "lower --index-recall-floor"
                )
            log.warning("falling back to exact search: the %s", message)
            fallback = message
            chosen = "exact"
            built = cls._make(
                "exact", items, hnsw_m, ef_construction, ef_search, None, None, 0, kind
            )
            recall = _recall_at_k(exact, built.search(queries, k)[0])
        built.report = IndexReport(
            kind=chosen,
            n_items=n,
            dim=items.shape[1],
            build_s=time.perf_counter() - started,
            recall_k=k,
            recall=recall,
            recall_queries=len(queries),
            requested=kind,
            recall_floor=recall_floor,
            params=built._params(),
            fallback=fallback,
        )
        return built

    @classmethod
    def _make(
        cls, chosen, items, hnsw_m, ef_construction, ef_search, nlist, nprobe, seed, requested
    ) -> FactorIndex:
        import faiss

        n, dim = items.shape
        faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
        keep = None
        index: faiss.Index
        try:
            if chosen == "exact":
                index = faiss.IndexFlatIP(dim)
            elif chosen == "hnsw":
                hnsw = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
                hnsw.hnsw.efConstruction = ef_construction
                hnsw.hnsw.efSearch = ef_search
                index = hnsw
            else:
                default_nlist, default_nprobe = ivf_parameters(n)
                nlist = default_nlist if nlist is None else nlist
                if not 1 <= nlist <= n:
                    raise ConfigError(f"IVF nlist must be in [1, {n}]. Got {nlist}")
                nprobe = min(nlist, default_nprobe if nprobe is None else nprobe)
                items = _euclidean_transform(items)
                keep = faiss.IndexFlatIP(dim + 1)
                ivf = faiss.IndexIVFFlat(keep, dim + 1, nlist, faiss.METRIC_INNER_PRODUCT)
                ivf.cp.seed = int(seed)
                ivf.train(items)
                ivf.nprobe = max(1, nprobe)
                index = ivf
            index.add(items)
        finally:
            faiss.omp_set_num_threads(1)
        empty = IndexReport(chosen, n, dim, 0.0, 0, 1.0, 0, requested=requested)
        return cls(index, empty, has_bias=False, keep=keep)

    def _params(self) -> dict[str, Any]:
        kind = self.report.kind
        if kind == "hnsw":
            return {"M": int(self._index.hnsw.nb_neighbors(1)), "ef_search": self._ef_search()}
        if kind == "ivf":
            return {
                "nlist": int(self._index.nlist),
                "nprobe": int(self._index.nprobe),
                "euclidean_transform": True,
            }
        return {}

    def _ef_search(self) -> int:
        return int(self._index.hnsw.efSearch)

    def _widen(self, ef_start: int) -> bool:
        """Search wider (double efSearch or nprobe); ``False`` when it cannot."""
        if self.report.kind == "hnsw":
            ef, widest = self._ef_search(), min(4096, _HNSW_WIDEST * ef_start)
            if ef >= widest:
                return False
            self._index.hnsw.efSearch = min(widest, 2 * ef)
            return True
        if self.report.kind == "ivf":
            if self._index.nprobe >= self._index.nlist:
                return False
            self._index.nprobe = min(int(self._index.nlist), 2 * int(self._index.nprobe))
            return True
        return False

    def _with_bias(self, vectors: np.ndarray) -> np.ndarray:
        if not self.has_bias:
            return vectors
        ones = np.ones((vectors.shape[0], 1), dtype=np.float32)
        return np.ascontiguousarray(np.hstack([vectors, ones]))

    def query_vectors(self, model: FactorModel, query: Query) -> np.ndarray:
        """The query vectors of known users (their factors) or histories (folded in)."""
        return self._with_bias(_user_vectors(model, query))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item codes and scores per query vector (``-1`` pads missing results)."""
        k = min(k, self.report.n_items)
        # OpenMP's thread count is per calling thread: set it on every (worker) thread.
        self._faiss.omp_set_num_threads(1)
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.report.kind == "ivf":  # queries of the Euclidean transform: [q, 0]
            vectors = np.hstack([vectors, np.zeros((vectors.shape[0], 1), dtype=np.float32)])
        scores, codes = self._index.search(np.ascontiguousarray(vectors), k)
        return codes.astype(np.int64), scores


def _user_vectors(model: FactorModel, query: Query) -> np.ndarray:
    return np.ascontiguousarray(model.user_vectors(query), dtype=np.float32)


def _agrees_with_model(model: Recommender, items: np.ndarray, sample: int = 8) -> bool:
    """Whether inner products of the vectors reproduce the model's own scores."""
    if not isinstance(model, FactorModel):
        return False
    lengths = np.diff(np.asarray(model.history_indptr_))
    users = np.flatnonzero(lengths > 0)[:sample]
    if users.size == 0:
        return True
    vectors = _user_vectors(model, Query.users(users))
    if items.shape[1] == vectors.shape[1] + 1:
        vectors = np.hstack([vectors, np.ones((users.size, 1), dtype=np.float32)])
    if vectors.shape[1] != items.shape[1]:
        return False
    expected = model.score(Query.users(users))
    return bool(np.allclose(vectors @ items.T, expected, rtol=1e-3, atol=1e-4))


def _euclidean_transform(items: np.ndarray) -> np.ndarray:
    """``[h, √(R² − ‖h‖²)]`` per item, ``R`` the largest norm: every row gets norm ``R`` and
    inner products with ``[q, 0]`` are unchanged."""
    norms = np.linalg.norm(items.astype(np.float64), axis=1)
    extra = np.sqrt(np.maximum(norms.max(initial=0.0) ** 2 - norms**2, 0.0))
    return np.ascontiguousarray(np.hstack([items, extra[:, None]]), dtype=np.float32)


def _item_vectors(model: FactorModel) -> np.ndarray:
    items = np.asarray(model.item_vectors(), dtype=np.float32)
    bias = model.item_biases()
    if bias is not None:
        items = np.hstack([items, np.asarray(bias, dtype=np.float32).reshape(-1, 1)])
    return np.ascontiguousarray(items)
