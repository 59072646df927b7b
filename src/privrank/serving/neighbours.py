r"""Sparse top-k neighbour matrices for item-item models (ItemKNN, EASE) at serving time.

An *item-item model* (:class:`~privrank.models.capabilities.ItemItemModel`) scores a history
:math:`x \in \{0,1\}^{|I|}` (a known user's training history or an ad-hoc one) by
:math:`\hat y = x W` with the item × item matrix :math:`W` of its ``item_item_weights()``
(ItemKNN: the sparse pruned cosine ``similarity_``; EASE: the dense ``weights_``).

At load the server keeps, for every source item :math:`i` (row of :math:`W`), only its ``k``
largest weights (ties: lower target item first) in a CSR matrix :math:`W_k`, and answers a
history by the sparse row × matrix product :math:`\tilde y = x W_k`, ranking only the items it
reaches: the work is :math:`\sum_{i \in x} \mathrm{nnz}(W_k[i])` instead of
:math:`|x| \cdot |I|` (EASE) plus a pass over every item (both). The top-k of :math:`\tilde y`
is taken exactly as the model does (items of the history and excluded items left out, the best
first, ties by lower item code, items :math:`\tilde y` does not reach scoring 0).

**Exactness.** When ``k`` covers every non-zero of every row, :math:`W_k = W` and the answers
are the model's, score for score (same product in the same precision); ItemKNN's default
(``--neighbours`` unset) is this exact matrix. A smaller ``k`` (EASE, or ItemKNN with
``--neighbours K``) approximates: recall@10 of :math:`\tilde y`'s top-10 against the model's
own dense top-10, and the largest score difference on the items returned, are measured on a
sample of the model's users when the matrix is built and reported in :class:`NeighbourReport`
(``GET /readyz``, ``GET /v1/models``, the log). Below the recall floor an explicit ``k`` is
refused (:class:`~privrank.serving.errors.IndexQualityError`); the default (exact) never is.

Privacy: the matrix is post-processing of the trained model's parameters, so a model trained
with user-level (ε, δ)-differential privacy keeps its guarantee; the recall check reads the
model's own training histories, which the server holds anyway, and only aggregate figures
leave it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.metrics.topk import top_k
from privrank.models import Query
from privrank.models.capabilities import ItemItemModel
from privrank.serving.errors import IndexQualityError

__all__ = ["NeighbourIndex", "NeighbourReport", "item_item_matrix", "prune_rows"]

log = logging.getLogger(__name__)

_BLOCK_ENTRIES = 16 * 1024 * 1024  # dense entries pruned at once (64 MiB of float32)


def item_item_matrix(model: Any) -> np.ndarray | sp.csr_matrix | None:
    """The item × item matrix ``W`` an item-item model scores histories with, or ``None`` (a
    model that does not declare :class:`~privrank.models.capabilities.ItemItemModel`, or a
    fit that does not score by ``x W`` alone)."""
    if not isinstance(model, ItemItemModel):
        return None
    return model.item_item_weights()


def prune_rows(matrix: np.ndarray | sp.spmatrix, k: int | None) -> sp.csr_matrix:
    """Keep the ``k`` largest non-zero entries of each row (ties: lower column), as CSR.

    Zeros are never stored (nor counted among the ``k``). ``k=None`` keeps every non-zero.
    """
    if k is not None and k < 1:
        raise ConfigError(f"neighbours per item must be >= 1. Got {k}")
    n_rows, n_cols = matrix.shape
    if sp.issparse(matrix):
        source = sp.csr_matrix(matrix, copy=True)
        source.eliminate_zeros()
        source.sort_indices()
        lengths = np.diff(source.indptr)
        if k is None or lengths.max(initial=0) <= k:
            return source
        rows = np.repeat(np.arange(n_rows), lengths)
        order = np.lexsort((source.indices, -source.data, rows))  # per row: best first
        rank = np.arange(order.size) - np.repeat(source.indptr[:-1], lengths)
        keep = order[rank < k]
        pruned = sp.csr_matrix(
            (source.data[keep], (rows[keep], source.indices[keep])),
            shape=matrix.shape,
            dtype=source.dtype,
        )
        pruned.sort_indices()
        return pruned
    dense = np.asarray(matrix)
    if k is None or k >= n_cols:
        pruned = sp.csr_matrix(dense)
        pruned.eliminate_zeros()
        return pruned
    block = max(1, _BLOCK_ENTRIES // max(n_cols, 1))
    parts = []
    for start in range(0, n_rows, block):
        rows = dense[start : start + block]
        # Zeros are not weights: rank them below every negative weight, then drop them.
        top = top_k(np.where(rows != 0, rows, -np.inf), k, threads=1)
        best, values = top.items, top.scores
        nonzero = np.isfinite(values)
        row_ids = np.broadcast_to(np.arange(rows.shape[0])[:, None], best.shape)
        parts.append(
            sp.csr_matrix(
                (values[nonzero], (row_ids[nonzero], best[nonzero])),
                shape=(rows.shape[0], n_cols),
                dtype=dense.dtype,
            )
        )
    pruned = sp.vstack(parts, format="csr")
    pruned.sort_indices()
    return pruned


@dataclass(frozen=True)
class NeighbourReport:
    """How the neighbour matrix was built and how close it is to the model.

    Attributes:
        source: The model attribute it was cut from (``similarity_`` or ``weights_``).
        n_items: Items.
        k: Neighbours kept per item (``None``: every non-zero).
        nnz: Stored weights.
        max_row_nnz: Non-zeros of the fullest row of the model's matrix.
        exact: Whether nothing was dropped (answers equal the model's).
        build_s: Seconds to build, recall check included.
        recall_k: The ``k`` of the recall check.
        recall: Mean recall@k of the sparse top-k against the model's dense top-k.
        recall_queries: Users in the check.
        max_score_error: Largest |sparse − dense| score over the items returned in the check.
        recall_floor: The floor an explicit ``k`` had to reach.
    """

    source: str
    n_items: int
    k: int | None
    nnz: int
    max_row_nnz: int
    exact: bool
    build_s: float
    recall_k: int
    recall: float
    recall_queries: int
    max_score_error: float
    recall_floor: float

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


class NeighbourIndex:
    """A sparse top-k item × item matrix answering an item-item model's histories.

    Build one with :meth:`build`; query with :meth:`top`.
    """

    def __init__(self, matrix: sp.csr_matrix, report: NeighbourReport | None = None) -> None:
        self.matrix = matrix
        self.report = report

    @classmethod
    def build(
        cls,
        model: Any,
        k: int | None = None,
        *,
        recall_floor: float = 0.95,
        recall_k: int = 10,
        recall_queries: int = 200,
        seed: int = 0,
    ) -> NeighbourIndex | None:
        """The neighbour matrix of ``model``, or ``None`` when it is not an item-item model
        (or does not score by ``x W``).

        Args:
            model: A fitted model.
            k: Neighbours kept per item; ``None`` keeps every non-zero (exact).
            recall_floor: Lowest recall@``recall_k`` against the model a pruned matrix may have.
            recall_k: ``k`` of the recall check.
            recall_queries: Users sampled for the check.
            seed: Seed of the sample.

        Raises:
            IndexQualityError: A pruned matrix misses ``recall_floor``.
        """
        weights = item_item_matrix(model)
        if weights is None or not model.supports_fold_in:
            return None
        source = "similarity_" if sp.issparse(weights) else "weights_"
        started = time.perf_counter()
        if sp.issparse(weights):
            max_row = int(np.diff(sp.csr_matrix(weights).indptr).max(initial=0))
        else:
            max_row = int(np.count_nonzero(weights, axis=1).max(initial=0))
        matrix = prune_rows(weights, k)
        built = cls(matrix)
        exact = k is None or k >= max_row
        if not _agrees_with_model(model, weights):
            log.warning(
                "%s has an item-item matrix but does not score by x·W: no neighbour matrix",
                type(model).__name__,
            )
            return None
        recall, queries, error, rk = built._check(model, recall_k, recall_queries, seed)
        built.report = NeighbourReport(
            source=source,
            n_items=int(model.n_items_),
            k=k,
            nnz=int(matrix.nnz),
            max_row_nnz=max_row,
            exact=exact,
            build_s=time.perf_counter() - started,
            recall_k=rk,
            recall=recall,
            recall_queries=queries,
            max_score_error=error,
            recall_floor=recall_floor,
        )
        log.info(
            "built a sparse neighbour matrix from %s.%s: k=%s, %d weights (exact: %s), "
            "recall@%d vs the model = %.4f on %d users, max score error %.2g, in %.2fs",
            type(model).__name__,
            source,
            k,
            matrix.nnz,
            exact,
            rk,
            recall,
            queries,
            error,
            built.report.build_s,
        )
        if not exact and recall < recall_floor:
            raise IndexQualityError(
                f"refusing to serve: the neighbour matrix with {k} neighbours per item has "
                f"recall@{rk} = {recall:.4f} against the model on {queries} users, below the "
                f"floor {recall_floor:.2f}; raise --neighbours or lower --index-recall-floor"
            )
        return built

    def top(
        self, history: np.ndarray, k: int, removed: set[int] | frozenset[int] = frozenset()
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best item codes and scores of ``x W_k`` for one history.

        Args:
            history: Item codes of the history (repeats count once).
            k: Items wanted.
            removed: Item codes never returned (the history itself when seen items are
                excluded, excluded items).

        Returns:
            ``(codes, scores)``, best first, ties by lower code; fewer than ``k`` when fewer
            items are eligible. Items ``x W_k`` does not reach score 0.
        """
        n = self.matrix.shape[0]
        codes = np.asarray(history, dtype=np.int64)
        row = Query(indptr=np.array([0, codes.size]), items=codes).to_csr(n)
        product = (row @ self.matrix).tocsr()
        reached = product.indices.astype(np.int64)
        # The model returns float32 scores: rank in float32 so ties are the model's ties.
        values = product.data.astype(np.float32)
        if removed:
            keep = ~np.isin(reached, np.fromiter(removed, dtype=np.int64, count=len(removed)))
            reached, values = reached[keep], values[keep]
        order = np.lexsort((reached, -values))
        reached, values = reached[order], values[order]
        positive = values > 0
        chosen = list(
            zip(reached[positive][:k].tolist(), values[positive][:k].tolist(), strict=True)
        )
        if len(chosen) < k:
            # Zero scores: explicit zeros and every item not reached, lowest code first.
            nonzero = set(reached[values != 0].tolist())
            code = 0
            while len(chosen) < k and code < n:
                if code not in nonzero and code not in removed:
                    chosen.append((code, 0.0))
                code += 1
            negative = values < 0
            room = k - len(chosen)
            chosen += list(
                zip(
                    reached[negative][:room].tolist(), values[negative][:room].tolist(), strict=True
                )
            )
        if not chosen:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        out_codes, out_scores = zip(*chosen, strict=True)
        return np.asarray(out_codes, dtype=np.int64), np.asarray(out_scores, dtype=np.float32)

    def _check(self, model, k, queries, seed) -> tuple[float, int, float, int]:
        # Users with a history that leaves at least k items to recommend (a smaller k when
        # no user does, in a tiny catalogue).
        n = int(model.n_items_)
        k = int(min(k, n))
        lengths = np.diff(np.asarray(model.history_indptr_))
        if lengths.max(initial=0) == 0:
            return 1.0, 0, 0.0, 0
        if not ((lengths > 0) & (lengths <= n - k)).any():
            k = int(n - lengths[lengths > 0].min())
            if k < 1:
                return 1.0, 0, 0.0, 0
        users = np.flatnonzero((lengths > 0) & (lengths <= n - k))
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(users, size=min(queries, users.size), replace=False))
        expected, _ = model.recommend(Query.users(users), k)
        indptr, items = model.history_indptr_, model.history_items_
        hits, error = 0, 0.0
        for row, user in enumerate(users):
            seen = items[indptr[user] : indptr[user + 1]]
            codes, scores = self.top(seen, k, frozenset(seen.tolist()))
            hits += len(set(codes.tolist()) & set(expected[row].tolist()))
            dense = model.score(Query.users([int(user)]), items=codes)[0]
            error = max(error, float(np.max(np.abs(dense - scores), initial=0.0)))
        return hits / (k * users.size), int(users.size), error, k


def _agrees_with_model(model: Any, weights: Any, sample: int = 4) -> bool:
    """Whether ``x W`` reproduces the model's scores of a few training users."""
    lengths = np.diff(np.asarray(model.history_indptr_))
    users = np.flatnonzero(lengths > 0)[:sample]
    if users.size == 0:
        return True
    indptr, items = model.history_indptr_, model.history_items_
    history = Query.histories([items[indptr[u] : indptr[u + 1]] for u in users])
    product = history.to_csr(model.n_items_) @ weights
    product = product.toarray() if sp.issparse(product) else np.asarray(product)
    expected = model.score(Query.users(users))
    return bool(np.allclose(product, expected, rtol=1e-3, atol=1e-4))
