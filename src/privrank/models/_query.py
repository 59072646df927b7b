"""What a model is asked to score: known users, or ad-hoc histories (fold-in)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from privrank.errors import ConfigError

__all__ = ["Query"]


@dataclass(frozen=True, eq=False)
class Query:
    """A batch of scoring requests: either known users or ad-hoc item histories.

    Build one with :meth:`users` (codes of users the model was trained on; their training
    history is what the model knows of them) or :meth:`histories` (any list of item-code
    sequences, e.g. a new user's clicks or a history that never leaves the device: the model
    *folds it in* without retraining). Histories keep their order, so sequence models can use it;
    bag-of-items models see :meth:`to_csr`.

    Attributes:
        user_codes: Dense user codes (int64), or ``None`` for a history query.
        indptr: Ragged offsets of the histories (int64, length ``n_queries + 1``), or ``None``.
        items: Concatenated item codes of the histories (int64), or ``None``.
    """

    user_codes: np.ndarray | None = None
    indptr: np.ndarray | None = None
    items: np.ndarray | None = None

    @classmethod
    def users(cls, codes: int | Sequence[int] | np.ndarray) -> Query:
        """A query for users known to the model, by dense code."""
        array = np.atleast_1d(np.asarray(codes))
        if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
            raise ConfigError(
                f"User codes must be a 1-D array of integers. Got dtype {array.dtype} "
                f"and shape {array.shape} instead."
            )
        return cls(user_codes=array.astype(np.int64, copy=False))

    @classmethod
    def histories(cls, histories: Sequence[Sequence[int] | np.ndarray] | sp.spmatrix) -> Query:
        """A query for ad-hoc histories of item codes (one per query, possibly empty).

        Args:
            histories: A sequence of item-code sequences (order kept), or a sparse matrix whose
                rows are histories (its non-zero columns, in column order).
        """
        if sp.issparse(histories):
            matrix = sp.csr_matrix(histories)
            matrix.eliminate_zeros()
            matrix.sort_indices()
            indptr = matrix.indptr.astype(np.int64)
            items = matrix.indices.astype(np.int64)
            return cls(indptr=indptr, items=items)
        arrays = [np.asarray(h) for h in histories]
        for position, array in enumerate(arrays):
            if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
                raise ConfigError(
                    f"History {position} must be a 1-D sequence of integer item codes. Got dtype "
                    f"{array.dtype} and shape {array.shape} instead."
                )
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        indptr = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        items = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, dtype=np.int64)
        return cls(indptr=indptr, items=items)

    @property
    def is_users(self) -> bool:
        """Whether this query names known users (rather than carrying histories)."""
        return self.user_codes is not None

    def __len__(self) -> int:
        if self.user_codes is not None:
            return len(self.user_codes)
        return len(self.ragged()[0]) - 1

    def ragged(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, items)`` of a history query.

        Raises:
            ConfigError: This query names known users (it has no histories of its own).
        """
        if self.indptr is None or self.items is None:
            raise ConfigError(
                "This query names known users by code and carries no histories; use their "
                "training histories (or Query.histories) instead."
            )
        return self.indptr, self.items

    def lengths(self) -> np.ndarray:
        """Number of items in each history (history queries only)."""
        return np.diff(self.ragged()[0])

    def history(self, position: int) -> np.ndarray:
        """Item codes of history ``position`` in their given order."""
        indptr, items = self.ragged()
        return items[indptr[position] : indptr[position + 1]]

    def take(self, positions: np.ndarray) -> Query:
        """The sub-query of the given positions, in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.user_codes is not None:
            return Query(user_codes=self.user_codes[positions])
        source_indptr, source_items = self.ragged()
        starts, ends = source_indptr[positions], source_indptr[positions + 1]
        lengths = ends - starts
        indptr = np.zeros(len(positions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        gather = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Query(indptr=indptr, items=source_items[gather])

    def to_csr(self, n_items: int, dtype: np.dtype | type = np.float32) -> sp.csr_matrix:
        """The histories as a binary ``n_queries × n_items`` matrix (repeats count once)."""
        indptr, items = self.ragged()
        matrix = sp.csr_matrix(
            (np.ones(len(items), dtype=dtype), items, indptr),
            shape=(len(self), n_items),
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1
        return matrix
