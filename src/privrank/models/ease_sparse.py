r"""EASE on pruned neighbourhoods: EASE for catalogues too large for a dense inverse."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.models._als_kernels import run_parallel
from privrank.models._ease_sparse_kernels import solve_neighbourhoods, top_neighbours
from privrank.models._private import PlannedGramFit
from privrank.models._row_sums import FEW_ROWS, sparse_history_row_sums
from privrank.models.base import (
    FitOptions,
    ModelConfig,
    ModelFitError,
    Query,
    Recommender,
    register,
)
from privrank.models.capabilities import ItemItemModel
from privrank.models.ease import EASEPrivateConfig, private_ease_system
from privrank.privacy.spec import PrivacySpec

__all__ = ["EASESparse", "EASESparseConfig", "gram_csr", "neighbourhood_weights"]

# Items per block when the sparse Gram matrix is computed (bounds its temporary products).
_GRAM_BLOCK = 4096


class EASESparseConfig(ModelConfig):
    """Hyper-parameters of :class:`EASESparse`.

    Attributes:
        regularization: The L2 weight :math:`\\lambda`, as in :class:`~privrank.models.EASE`.
        neighbors: ``k``, the source items each target item regresses on (its ``k`` largest
            co-occurrences). ``k ≥ n_items − 1`` makes every other item a neighbour, which is
            dense EASE exactly (at a cost of :math:`O(n^4)`: for small catalogues and checks).
        dtype: Precision of the stored weights (the neighbourhood solves run in float64).
        private: Settings of a private fit (DP-EASE's, :class:`~privrank.models.EASEPrivateConfig`);
            ``None``: its defaults when the fit has a privacy spec. Refused by a fit without one.
    """

    regularization: float = Field(300.0, gt=0)
    neighbors: int = Field(200, ge=1)
    dtype: Literal["float32", "float64"] = "float32"
    private: EASEPrivateConfig | None = None


@register("ease-sparse")
class EASESparse(Recommender, ItemItemModel, PlannedGramFit):
    r"""EASE restricted to pruned neighbourhoods: a sparse item-item model that scales to
    catalogues of 100k items, and equals dense EASE when nothing is pruned.

    EASE (Steck 2019, :class:`~privrank.models.EASE`) solves
    :math:`\min_B \lVert X - XB\rVert_F^2 + \lambda\lVert B\rVert_F^2` with
    :math:`\operatorname{diag}(B) = 0`. The constraint decouples the columns: column :math:`j`
    is the ridge regression of :math:`X_{:j}` on the other columns,

    .. math:: B_{-j,j} = (G_{-j,-j} + \lambda I)^{-1} G_{-j,j}, \qquad G = X^\top X,

    which equals :math:`-P_{-j,j}/P_{jj}` with :math:`P = (G + \lambda I)^{-1}` (the block
    inverse, i.e. the Schur complement), dense EASE's closed form. The dense form needs the
    :math:`n \times n` inverse: :math:`O(n^3)` time and :math:`4n^2` bytes (minutes and
    gigabytes beyond ~20k items). This model restricts each regression to a neighbourhood
    :math:`N_j`, the ``neighbors`` items :math:`i \ne j` with the largest positive
    co-occurrence :math:`G_{ij}` (ties: the lower code first):

    .. math:: B_{N_j,j} = (G_{N_j N_j} + \lambda I)^{-1} G_{N_j j}, \qquad B_{ij} = 0
              \text{ for } i \notin N_j,

    one ``k × k`` Cholesky solve per item in float64 (compiled, parallel over items) on exact
    entries of :math:`G` (held as a sparse matrix; each block gathered by binary search). Time
    :math:`O(\mathrm{nnz}(G) + n k^3)`, memory :math:`O(\mathrm{nnz}(G) + n k)`, and :math:`B`
    has at most :math:`nk` non-zeros. With ``neighbors`` :math:`\ge n - 1` every other item is
    in every neighbourhood and :math:`B` is dense EASE's exactly (up to rounding). A history
    :math:`x` is scored by :math:`\hat y = xB`, the same for a training user and for that user's
    history folded in.

    This is neither SANSA (Spišák et al., RecSys 2023: a sparse approximate inverse through an
    incomplete LDLᵀ) nor an approximation of :math:`P`: each column is the exact solution of a
    smaller regression, so the error comes only from the items left out of :math:`N_j`.

    **Differential privacy** (``FitOptions(privacy=spec)``): the same user-level (ε, δ)-DP
    release and post-processing as DP-EASE
    (:func:`~privrank.models.ease.private_ease_system`: noisy item counts, the noisy
    bounded-norm Gram block of the items that stand out of the noise, its spectral denoising
    and the noise-aware ridge; settings in ``private``, DP-EASE's). The neighbourhoods are
    chosen from the released (noisy) co-occurrences and the solves run on the denoised block:
    post-processing of the release,
    so the guarantee is the release's, and the releases are DP-EASE's, stated in advance
    (:class:`~privrank.models._private.PlannedGramFit`; a two-stage fit can then calibrate its
    split). Items outside the block get no weights; the popularity prior is added as in
    DP-EASE. Without noise (a test-only switch) and with bounds no user
    exceeds, this is the non-private model.

    Attributes:
        weights_: :math:`B` as an ``n_items × n_items`` CSR matrix (row: source item, column:
            target item) in ``dtype``.
        prior_: A private fit's popularity prior added to the scores, or ``None``.
        privacy_guarantee_: The guarantee of a private fit (``None`` otherwise).
    """

    Config = EASESparseConfig
    config: EASESparseConfig
    PrivateConfig = EASEPrivateConfig
    supports_privacy = True
    weights_: sp.csr_matrix
    prior_: np.ndarray | None

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        threads = options.resolved_threads()
        gram = gram_csr(matrix)
        self.weights_ = neighbourhood_weights(
            gram, self.config.regularization, self.config.neighbors, self.config.dtype, threads
        )
        self.prior_ = None
        self._report(1, 1)

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: PrivacySpec
    ) -> None:
        config, private = self.config, self.private_settings(EASEPrivateConfig)
        fit, block, regularization = private_ease_system(
            matrix, spec, private, config.regularization
        )
        items = fit.release.items
        solved = neighbourhood_weights(
            sp.csr_matrix(block),
            regularization,
            config.neighbors,
            config.dtype,
            options.resolved_threads(),
            choose_from=sp.csr_matrix(fit.release.gram),
        ).tocoo()
        weights = sp.csr_matrix(
            (solved.data, (items[solved.row], items[solved.col])),
            shape=(self.n_items_, self.n_items_),
            dtype=np.dtype(config.dtype),
        )
        weights.sort_indices()
        self.weights_ = weights
        self.item_popularity_ = fit.popularity.astype(np.float32)
        self.prior_ = fit.prior
        self.privacy_guarantee_ = fit.release.guarantee
        self._report(1, 1)

    def _score_histories(self, histories: Query) -> np.ndarray:
        if len(histories) <= FEW_ROWS:  # the same bits, without scipy's per-call set-up
            scores = np.asarray(sparse_history_row_sums(histories, self.weights_), np.float32)
        else:
            rows = histories.to_csr(self.n_items_, dtype=self.weights_.dtype)
            scores = np.asarray((rows @ self.weights_).toarray(), dtype=np.float32)
        if self.prior_ is not None:
            scores += self.prior_
        return scores

    def item_item_weights(self) -> sp.csr_matrix | None:
        """:math:`B`; ``None`` for a private fit with a popularity prior."""
        return self.weights_ if self.prior_ is None else None

    def _state(self) -> dict[str, np.ndarray]:
        b = self.weights_
        state = {"indptr": b.indptr, "indices": b.indices, "data": b.data}
        if self.prior_ is not None:
            state["prior"] = self.prior_
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        if unknown := set(state) - {"indptr", "indices", "data", "prior"}:
            raise ValueError(f"unexpected arrays {sorted(unknown)}")
        indptr, indices, data = state["indptr"], state["indices"], state["data"]
        prior = state.get("prior")
        if prior is not None and prior.shape != (self.n_items_,):
            raise ValueError(f"prior has shape {prior.shape}")
        if indptr.shape != (self.n_items_ + 1,) or indices.shape != data.shape:
            raise ValueError("weight arrays have the wrong shape")
        if indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
            raise ValueError("weight offsets are inconsistent")
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_items_):
            raise ValueError("weight column indices out of range")
        if data.dtype != np.dtype(self.config.dtype):
            raise ValueError(f"weights are {data.dtype}, the config says {self.config.dtype}")
        self.weights_ = sp.csr_matrix((data, indices, indptr), shape=(self.n_items_,) * 2)
        self.prior_ = prior


def gram_csr(matrix: sp.spmatrix) -> sp.csr_matrix:
    r"""The sparse Gram matrix :math:`G = X^\top X` of a binary user × item matrix: CSR,
    float32 counts (exact below :math:`2^{24}`), sorted int32 or int64 indices; computed
    block of items by block so the temporary products stay small."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    transposed = sp.csr_matrix(csr.T)
    blocks = [
        transposed[start : start + _GRAM_BLOCK] @ csr
        for start in range(0, csr.shape[1], _GRAM_BLOCK)
    ]
    gram = sp.csr_matrix(sp.vstack(blocks, format="csr"), dtype=np.float32)
    gram.sort_indices()
    return gram


def neighbourhood_weights(
    gram: sp.csr_matrix,
    regularization: float,
    neighbors: int,
    dtype: str = "float32",
    threads: int = 1,
    *,
    choose_from: sp.csr_matrix | None = None,
) -> sp.csr_matrix:
    r"""The weights :math:`B` of :class:`EASESparse` from a symmetric Gram matrix.

    Args:
        gram: ``n × n`` symmetric CSR matrix :math:`G` (exact counts, or a private estimate).
        regularization: :math:`\lambda`, added to the diagonal of every neighbourhood block.
        neighbors: ``k`` (``≥ n − 1``: every other item, dense EASE exactly).
        dtype: Precision of :math:`B` (the solves run in float64).
        threads: Threads of the kernels (one neighbourhood per thread at a time).
        choose_from: Choose the neighbourhoods from this symmetric matrix's entries instead of
            ``gram``'s (a private fit chooses from the released co-occurrences and solves on
            their denoised block).

    Returns:
        ``n × n`` CSR :math:`B` in ``dtype``, column ``j`` supported on :math:`N_j`.

    Raises:
        ModelFitError: A neighbourhood system is not positive definite (a private, noisy
            block can be indefinite; an exact Gram block plus λI never is).
    """
    if gram.dtype not in (np.float32, np.float64):
        gram = sp.csr_matrix(gram, dtype=np.float64)
    gram = sp.csr_matrix(gram)
    gram.sort_indices()
    n = gram.shape[0]
    if n <= 1:
        return sp.csr_matrix((n, n), dtype=np.dtype(dtype))
    k = min(int(neighbors), n - 1)
    if k == n - 1:  # every other item: dense EASE exactly
        everything = np.tile(np.arange(n, dtype=np.int32), (n, 1))
        keep = ~np.eye(n, dtype=bool)
        neighbours = everything[keep].reshape(n, n - 1)
    else:
        chooser = gram if choose_from is None else sp.csr_matrix(choose_from)
        chooser.sort_indices()
        neighbours = np.empty((n, k), dtype=np.int32)
        run_parallel(
            top_neighbours,
            chooser.indptr,
            chooser.indices,
            chooser.data,
            k,
            neighbours,
            threads=threads,
        )
    solved = np.empty(neighbours.shape, dtype=np.float64)
    failures = np.zeros(n, dtype=np.uint8)
    run_parallel(
        solve_neighbourhoods,
        gram.indptr,
        gram.indices,
        gram.data,
        neighbours,
        float(regularization),
        solved,
        failures,
        threads=threads,
    )
    if failures.any():
        item = int(np.flatnonzero(failures)[0])
        raise ModelFitError(
            f"EASE-sparse: the neighbourhood system of item {item} (G_NN + {regularization} I) "
            f"is not positive definite ({int(failures.sum())} item(s) in all); raise the "
            "regularization"
        )
    valid = neighbours >= 0
    columns = np.broadcast_to(np.arange(n)[:, None], neighbours.shape)[valid]
    weights = sp.csr_matrix(
        (solved[valid], (neighbours[valid].astype(np.int64), columns)),
        shape=(n, n),
        dtype=np.dtype(dtype),
    )
    weights.sort_indices()
    return weights
