"""Item-based k-nearest neighbours with shrunk cosine similarity."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.data.interactions import Interactions
from privrank.models._ranking import top_k
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register

__all__ = ["ItemKNN", "ItemKNNConfig"]

# Dense similarity entries computed at once while pruning (bounds memory to ~128 MiB).
_BLOCK_ENTRIES = 32 * 1024 * 1024


class ItemKNNConfig(ModelConfig):
    """Hyper-parameters of :class:`ItemKNN`.

    Attributes:
        neighbors: Neighbours kept per target item (``k``).
        shrinkage: Added to the norm product in the denominator (``h``); damps similarities
            supported by few co-occurrences.
    """

    neighbors: int = Field(100, ge=1)
    shrinkage: float = Field(10.0, ge=0)


@register("itemknn")
class ItemKNN(Recommender):
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

    Attributes:
        similarity_: :math:`S` as an ``n_items × n_items`` CSR matrix (float32).
    """

    Config = ItemKNNConfig

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        self.similarity_ = pruned_cosine(matrix, self.config.neighbors, self.config.shrinkage)
        self._report(1, 1)

    def _score_histories(self, histories: Query) -> np.ndarray:
        product = histories.to_csr(self.n_items_) @ self.similarity_
        return product.toarray()

    def _state(self) -> dict[str, np.ndarray]:
        s = self.similarity_
        return {"indptr": s.indptr, "indices": s.indices, "data": s.data}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        indptr, indices, data = state["indptr"], state["indices"], state["data"]
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
    n_items = matrix.shape[1]
    columns = sp.csc_matrix(matrix, dtype=np.float64)
    transposed = sp.csr_matrix(columns.T)
    norms = np.sqrt(np.asarray(columns.sum(axis=0)).ravel())
    keep = min(neighbors, max(n_items - 1, 1))
    block = max(1, min(n_items, _BLOCK_ENTRIES // max(n_items, 1)))
    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        targets = np.arange(start, stop)
        co_counts = (transposed @ columns[:, start:stop]).toarray()  # n_items × b
        sims = co_counts / (np.outer(norms, norms[start:stop]) + shrinkage + 1e-300)
        sims[targets, targets - start] = 0.0
        best, values = top_k(sims.T, keep)  # per target: source items
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
