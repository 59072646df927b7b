"""``x W`` for a few binary histories ``x`` and an item-item matrix ``W``, without scipy.

A served request scores one history. Building its sparse row and multiplying it by ``W``
(scipy's ``csr @ dense`` or ``csr @ csr``) costs more in per-call set-up than in arithmetic.
Summing the rows of ``W`` of the history's items does the same float additions in the same
order (scipy's kernels add ``1.0 · W[k]`` row after row, items in increasing code), so the
result is the same bits; ``tests/models/test_row_sums.py`` checks it against scipy as the
oracle. :func:`history_row_sums` sums dense rows; :func:`sparse_history_row_sums` sums the rows
of a CSR ``W`` (too large to densify: Beauty's 12,101 items) with a numba kernel, adding each
stored entry into its column, as scipy's ``csr_matmat`` does.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

from privrank.models._query import Query

__all__ = ["FEW_ROWS", "history_row_sums", "sparse_history_row_sums"]

#: Batches of at most this many histories are scored by :func:`history_row_sums`; larger
#: batches by the sparse product (one matrix product is then cheaper than a loop).
FEW_ROWS = 16


def history_row_sums(histories: Query, weights: np.ndarray) -> np.ndarray:
    """``(n, n_items)`` sums of ``weights``' rows over each history's distinct items, in
    increasing item code (an item repeated in a history counts once), in ``weights``' dtype.

    Args:
        histories: A history query.
        weights: ``(n_items, n_items)`` dense matrix.
    """
    indptr, items = histories.ragged()
    out = np.empty((len(histories), weights.shape[1]), dtype=weights.dtype)
    for row in range(len(histories)):
        rows = np.unique(items[indptr[row] : indptr[row + 1]])
        out[row] = weights[rows].sum(axis=0, dtype=weights.dtype)
    return out


def sparse_history_row_sums(histories: Query, weights: sp.csr_matrix) -> np.ndarray:
    """``(n, n_items)`` sums of the CSR ``weights``' rows over each history's distinct items, in
    increasing item code (an item repeated in a history counts once), in ``weights``' dtype:
    the bits of ``histories.to_csr(...) @ weights`` (module docstring).

    Args:
        histories: A history query.
        weights: ``(n_items, n_columns)`` CSR matrix (any index order within a row).
    """
    indptr, items = histories.ragged()
    out = np.zeros((len(histories), weights.shape[1]), dtype=weights.dtype)
    _add_rows(
        np.asarray(indptr, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        weights.indptr,
        weights.indices,
        weights.data,
        out,
    )
    return out


@njit(cache=True)
def _add_rows(indptr, items, w_indptr, w_indices, w_data, out):  # pragma: no cover - compiled
    for row in range(indptr.shape[0] - 1):
        for item in np.unique(items[indptr[row] : indptr[row + 1]]):
            for entry in range(w_indptr[item], w_indptr[item + 1]):
                out[row, w_indices[entry]] += w_data[entry]
