"""Item-based k-nearest neighbours with shrunk cosine similarity."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.metrics.topk import top_k
from privrank.models._private import (
    PlannedGramFit,
    PrivateGramConfig,
    gram_source,
    private_gram_fit,
)
from privrank.models._row_sums import FEW_ROWS, history_row_sums, sparse_history_row_sums
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register
from privrank.models.capabilities import ItemItemModel
from privrank.privacy.spec import PrivacySpec

__all__ = [
    "ItemKNN",
    "ItemKNNConfig",
    "ItemKNNPrivateConfig",
    "pruned_cosine",
    "pruned_cosine_from_gram",
    "window_co_counts",
]

# Dense similarity entries computed at once while pruning (bounds memory to ~128 MiB).
_BLOCK_ENTRIES = 32 * 1024 * 1024
# Batches of at most FEW_ROWS histories are scored from a dense copy of S when it takes at
# most this many bytes; larger batches by the sparse product.
_DENSE_BYTES = 64 * 1024 * 1024


class ItemKNNPrivateConfig(PrivateGramConfig):
    """Settings of a private ItemKNN fit (DP-ItemKNN), the ``private`` block of
    :class:`ItemKNNConfig`.

    Attributes:
        threshold: Noisy co-occurrence counts below this many noise standard deviations σ are
            set to 0 (most of them are noise).
        shrinkage: ``shrinkage · σ`` is added to ``h``, so that items whose noisy norms are
            mostly noise get small similarities.

    The other fields are :class:`~privrank.models._private.PrivateGramConfig`'s.
    """

    threshold: float = Field(2.0, ge=0)
    shrinkage: float = Field(10.0, ge=0)


class ItemKNNConfig(ModelConfig):
    """Hyper-parameters of :class:`ItemKNN`.

    Attributes:
        neighbors: Neighbours kept per target item (``k``). The default, 400 (was 100), was
            chosen on validation parts carved from training data (BENCHMARKS.md, "Models that
            hold up, round 3"): of 50/100/200/400 it has the smallest worst-case loss against
            each data set's best (1.1%, on ML-100K; 100 lost 7%) over ML-100K, Beauty and three
            synthetic densities. The fit's time grows with it (the similarity keeps
            ``neighbors`` entries per item).
        shrinkage: Added to the norm product in the denominator (``h``); damps similarities
            supported by few co-occurrences.
        window: Count a co-occurrence of items :math:`i` and :math:`j` only in the histories
            where they sit at most ``window`` positions apart in time order (rows ordered by
            timestamp, then by position in the data): the items rated or bought *next to*
            each other, a signal a whole-history model such as EASE does not see (on ML-100K,
            ratings come in bursts). ``None``: the whole history (plain ItemKNN). Not with a
            privacy spec or a fit engine (their releases are of the whole-history Gram).
        private: Settings of a private fit (:class:`ItemKNNPrivateConfig`); ``None``: its
            defaults when the fit has a privacy spec. Refused by a fit without one.
    """

    neighbors: int = Field(400, ge=1)
    shrinkage: float = Field(10.0, ge=0)
    window: int | None = Field(None, ge=1)
    private: ItemKNNPrivateConfig | None = None


@register("itemknn")
class ItemKNN(Recommender, ItemItemModel, PlannedGramFit):
    r"""Item-based collaborative filtering with a sparse, pruned, shrunk cosine similarity.

    With :math:`X \in \{0,1\}^{|U|\times|I|}` the training matrix and :math:`x_i` its column
    for item :math:`i`, the similarity of a source item :math:`i` to a target item :math:`j \ne i`
    is

    .. math:: s_{ij} = \frac{x_i^\top x_j}{\lVert x_i\rVert\,\lVert x_j\rVert + h}

    (:math:`h` = ``shrinkage``; :math:`s_{ii} = 0`). For each target item :math:`j` only the
    ``neighbors`` largest positive :math:`s_{ij}` are kept (ties: lower :math:`i` first), giving a
    sparse matrix :math:`S`. A history :math:`x` (binary row vector) scores items by

    .. math:: \hat y = x\,S,\qquad \hat y_j = \sum_{i \in \text{history},\ i \in N_k(j)} s_{ij}

    which is the same for a training user and for that user's history folded in.

    **Windowed co-occurrence** (``window = w``): :math:`x_i^\top x_j` is replaced by
    :math:`c^{(w)}_{ij}`, the number of users in whose time-ordered history :math:`i` and
    :math:`j` appear at most :math:`w` positions apart (:func:`window_co_counts`); the norms
    stay :math:`\lVert x_i\rVert`, so :math:`c^{(w)}_{ij} \le x_i^\top x_j` and a ``window``
    at least as long as the longest history gives plain ItemKNN.

    **On a cluster** (``FitOptions(engine=...)``): :math:`X^\top X` is summed over user
    partitions by the engine (:class:`~privrank.models.engine.FitEngine`), then pruned here;
    the counts are integers, so :math:`S` is the in-process one exactly.

    **Differential privacy** (``FitOptions(privacy=spec)``, DP-ItemKNN): everything the
    similarity needs is the Gram matrix :math:`G = X^\top X` (co-occurrence counts
    :math:`x_i^\top x_j`, and :math:`\lVert x_i\rVert^2 = G_{ii}`) of the
    contribution-bounded binary matrix (at most :math:`c` items per user). It comes from the
    same user-level (ε, δ)-DP release as DP-EASE's
    (:func:`~privrank.privacy.gram_release.private_gram_release`: noisy item counts, then the
    noisy bounded-norm Gram block :math:`\tilde G` of the items that stand out of the noise;
    see :class:`~privrank.models.ease.EASE`). The similarity is post-processing of
    :math:`\tilde G`, of the counts and of the public noise σ: off-diagonal entries below
    ``private.threshold`` · σ are set to 0, then
    :math:`s_{ij} = \tilde G_{ij} / (\sqrt{\max(\tilde G_{ii}, 0)\max(\tilde G_{jj}, 0)} +
    s h + \text{private.shrinkage}\cdot\sigma)` (:math:`s` the reweighted block's scale
    relative to plain counts, 1 when nobody is reweighted), pruned as above, on the block's
    items (others get no neighbours); the cold-start popularity is :math:`\max(\tilde n, 0)`,
    and ``private.popularity_weight`` blends it into the scores as a prior (see
    :class:`~privrank.models.ease.EASE`). Without noise (a test-only switch, σ = 0) and with
    bounds no user exceeds, this is ItemKNN exactly. Hyper-parameters chosen on the private
    data itself are not accounted.

    Attributes:
        similarity_: :math:`S` as an ``n_items × n_items`` CSR matrix (float32).
        prior_: A private fit's popularity prior added to the scores, or ``None``.
        privacy_guarantee_: The guarantee of a private fit (``None`` otherwise).
    """

    Config = ItemKNNConfig
    config: ItemKNNConfig
    PrivateConfig = ItemKNNPrivateConfig
    supports_privacy = True
    supports_engine = True
    similarity_: sp.csr_matrix
    prior_: np.ndarray | None

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        config = self.config
        if config.window is not None:
            if options.engine is not None:
                raise ConfigError(
                    f"itemknn: window = {config.window} counts pairs within each history, which "
                    "a fit engine's Gram sums do not give; fit without an engine"
                )
            indptr, items = train.sequences()
            counts = window_co_counts(indptr, items.astype(np.int64), self.n_items_, config.window)
            norms = np.sqrt(np.asarray(matrix.astype(bool).sum(axis=0), dtype=np.float64).ravel())
            self.similarity_ = _pruned(
                lambda start, stop: counts[:, start:stop].toarray(),
                norms,
                config.neighbors,
                config.shrinkage,
            )
        elif options.engine is None:
            self.similarity_ = pruned_cosine(matrix, config.neighbors, config.shrinkage)
        else:  # X^T X summed over user partitions on the engine: the same integer counts
            gram = options.engine.gram_statistics(matrix).weighted_gram(None, math.inf)
            self.similarity_ = pruned_cosine_from_gram(gram, config.neighbors, config.shrinkage)
        self.prior_ = None
        self._report(1, 1)

    def check_privacy(self, spec: PrivacySpec) -> None:
        """Refuse a privacy spec as every model does, and also with ``window`` set.

        Raises:
            ConfigError: ``window`` is set (DP-ItemKNN releases the whole-history Gram, not
                windowed counts), or the base class's reasons.
        """
        if self.config.window is not None:
            raise ConfigError(
                f"itemknn: window = {self.config.window} has no private fit (DP-ItemKNN releases "
                "the whole-history Gram); drop window or the privacy spec"
            )
        super().check_privacy(spec)

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: PrivacySpec
    ) -> None:
        config, private = self.config, self.private_settings(ItemKNNPrivateConfig)
        fit = private_gram_fit(gram_source(matrix, options), spec, private)
        release = fit.release
        sigma = release.gram_std
        gram = release.gram
        diagonal = np.maximum(np.diagonal(gram), 0.0)
        gram[gram < private.threshold * sigma] = 0.0  # also every negative entry
        np.fill_diagonal(gram, diagonal)
        shrinkage = fit.scale * config.shrinkage + private.shrinkage * sigma
        block = pruned_cosine_from_gram(gram, config.neighbors, shrinkage).tocoo()
        items = release.items
        similarity = sp.csr_matrix(
            (block.data, (items[block.row], items[block.col])),
            shape=(self.n_items_, self.n_items_),
            dtype=np.float32,
        )
        similarity.sort_indices()
        self.similarity_ = similarity
        self.item_popularity_ = fit.popularity.astype(np.float32)
        self.prior_ = fit.prior
        self.privacy_guarantee_ = release.guarantee
        self._report(1, 1)

    def _score_histories(self, histories: Query) -> np.ndarray:
        dense = self._dense_similarity() if len(histories) <= FEW_ROWS else None
        if dense is None and len(histories) <= FEW_ROWS:  # the same bits, without scipy
            scores = sparse_history_row_sums(histories, self.similarity_)
        elif dense is None:
            scores = (histories.to_csr(self.n_items_) @ self.similarity_).toarray()
        else:
            scores = history_row_sums(histories, dense)  # the same bits, without scipy
        if self.prior_ is not None:
            scores += self.prior_
        return scores

    def _dense_similarity(self) -> np.ndarray | None:
        """:math:`S` as a dense float32 array, kept after its first use, when it takes at most
        :data:`_DENSE_BYTES` (``None`` otherwise). A served request scores one history: summing
        its items' dense rows skips the sparse product's per-call set-up, which cost most of
        the call (on ML-100K, 1,682 items and 380 neighbours a row: 0.18 vs 0.73 ms a
        history of 169 items)."""
        if self.n_items_**2 * 4 > _DENSE_BYTES:
            return None
        cached = getattr(self, "_dense", None)  # (the S it was made of, its dense copy)
        if cached is None or cached[0] is not self.similarity_:  # a refit or load replaced S
            cached = (self.similarity_, self.similarity_.toarray().astype(np.float32))
            self._dense = cached
        return cached[1]

    def item_item_weights(self) -> sp.csr_matrix | None:
        """:math:`S`; ``None`` for a private fit with a popularity prior."""
        return self.similarity_ if self.prior_ is None else None

    def _state(self) -> dict[str, np.ndarray]:
        s = self.similarity_
        state = {"indptr": s.indptr, "indices": s.indices, "data": s.data}
        if self.prior_ is not None:
            state["prior"] = self.prior_
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        indptr, indices, data = state["indptr"], state["indices"], state["data"]
        prior = state.get("prior")
        if prior is not None and prior.shape != (self.n_items_,):
            raise ValueError(f"prior has shape {prior.shape}")
        self.prior_ = prior
        if indptr.shape != (self.n_items_ + 1,) or indices.shape != data.shape:
            raise ValueError("similarity arrays have the wrong shape")
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_items_):
            raise ValueError("similarity column indices out of range")
        self.similarity_ = sp.csr_matrix(
            (data, indices, indptr), shape=(self.n_items_, self.n_items_)
        )


def pruned_cosine(matrix: sp.csr_matrix, neighbors: int, shrinkage: float) -> sp.csr_matrix:
    """The ItemKNN similarity :math:`S` (see :class:`ItemKNN`), built column block by block.

    Args:
        matrix: Binary ``n_users × n_items`` matrix.
        neighbors: Entries kept per column (target item).
        shrinkage: Shrinkage term ``h``.

    Returns:
        ``n_items × n_items`` CSR, float32, ``S[i, j]`` = similarity of source ``i`` to target
        ``j``; at most ``neighbors`` non-zeros per column, all positive.
    """
    columns = sp.csc_matrix(matrix, dtype=np.float64)
    transposed = sp.csr_matrix(columns.T)
    norms = np.sqrt(np.asarray(columns.sum(axis=0)).ravel())
    return _pruned(
        lambda start, stop: (transposed @ columns[:, start:stop]).toarray(),
        norms,
        neighbors,
        shrinkage,
    )


def window_co_counts(
    indptr: np.ndarray, items: np.ndarray, n_items: int, window: int
) -> sp.csc_matrix:
    r"""Windowed co-occurrence counts :math:`c^{(w)}_{ij}`: the number of histories in which
    items :math:`i \ne j` sit at most ``window`` positions apart.

    Args:
        indptr: Offsets of the time-ordered histories (``n_users + 1``).
        items: Their item codes, concatenated.
        n_items: Catalogue size.
        window: The largest distance in positions, ``w ≥ 1``.

    Returns:
        Symmetric ``n_items × n_items`` CSC matrix (float64) of counts, zero diagonal. A pair
        of items that occur close to each other several times in one history counts once.
    """
    if window < 1:
        raise ConfigError(f"itemknn: window must be an int >= 1. Got {window} instead.")
    items = np.asarray(items, dtype=np.int64)
    user = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    firsts, seconds, users = [], [], []
    for distance in range(1, window + 1):
        a = np.flatnonzero(user[:-distance] == user[distance:])  # empty when too short
        i, j = items[a], items[a + distance]
        keep = i != j
        firsts.append(np.minimum(i, j)[keep])
        seconds.append(np.maximum(i, j)[keep])
        users.append(user[a][keep])
    i, j, u = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (firsts, seconds, users))
    # one count per (user, pair): sort the triples and keep the first of each run
    order = np.lexsort((j, i, u))
    i, j, u = i[order], j[order], u[order]
    first = np.ones(i.size, dtype=bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1]) | (u[1:] != u[:-1])
    i, j = i[first], j[first]
    counts = sp.coo_matrix(
        (np.ones(2 * i.size), (np.concatenate([i, j]), np.concatenate([j, i]))),
        shape=(n_items, n_items),
    ).tocsc()
    counts.sum_duplicates()
    return counts


def pruned_cosine_from_gram(gram: np.ndarray, neighbors: int, shrinkage: float) -> sp.csr_matrix:
    r"""The ItemKNN similarity from a dense Gram matrix :math:`X^\top X` (exact, or a private
    estimate with non-negative entries): the same computation as :func:`pruned_cosine`, with
    co-occurrences read from ``gram`` and norms :math:`\sqrt{G_{ii}}`."""
    gram = np.asarray(gram, dtype=np.float64)
    norms = np.sqrt(np.maximum(np.diagonal(gram), 0.0))
    return _pruned(lambda start, stop: gram[:, start:stop], norms, neighbors, shrinkage)


def _pruned(co_counts_of, norms: np.ndarray, neighbors: int, shrinkage: float) -> sp.csr_matrix:
    n_items = norms.shape[0]
    keep = min(neighbors, max(n_items - 1, 1))
    block = max(1, min(n_items, _BLOCK_ENTRIES // max(n_items, 1)))
    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        targets = np.arange(start, stop)
        co_counts = co_counts_of(start, stop)  # n_items × b
        sims = co_counts / (np.outer(norms, norms[start:stop]) + shrinkage + 1e-300)
        sims[targets, targets - start] = 0.0
        top = top_k(sims.T, keep, threads=1)  # per target: source items
        best, values = top.items, top.scores
        positive = values > 0
        rows_out.append(best[positive])
        cols_out.append(np.broadcast_to(targets[:, None], best.shape)[positive])
        vals_out.append(values[positive])
    rows = np.concatenate(rows_out) if rows_out else np.zeros(0, dtype=np.int64)
    cols = np.concatenate(cols_out) if cols_out else np.zeros(0, dtype=np.int64)
    vals = np.concatenate(vals_out) if vals_out else np.zeros(0)
    similarity = sp.csr_matrix(
        (vals.astype(np.float32), (rows, cols)), shape=(n_items, n_items), dtype=np.float32
    )
    similarity.sort_indices()
    return similarity
