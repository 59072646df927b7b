"""Query groups: the data of learning to rank.

A :class:`QueryGroups` holds ``n`` (query, document) rows in query order: a dense float32 feature
matrix, a graded relevance label per row and the size of each query's group of consecutive rows
(LightGBM's ``group``; the LETOR ``qid`` runs). A two-stage recommender builds one group per user
(its candidates); the LightGBM LTR files (:mod:`privrank.data.readers.ltr`) are read into one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privrank.errors import DataError

__all__ = ["QueryGroups"]


@dataclass(frozen=True)
class QueryGroups:
    """Rows of (query, document) features grouped by query.

    Attributes:
        features: ``(n_rows, n_features)`` float32 or float64 (kept as given: a reader keeps
            the file's full precision, so LightGBM bins exactly the values it would read
            itself), finite.
        labels: ``(n_rows,)`` float32 graded relevance (``>= 0``).
        group_sizes: ``(n_queries,)`` int64, each ``>= 1``, summing to ``n_rows``.
        feature_names: One name per column.
    """

    features: np.ndarray
    labels: np.ndarray
    group_sizes: np.ndarray
    feature_names: tuple[str, ...]

    def __post_init__(self) -> None:
        features = np.asarray(self.features)
        if features.dtype not in (np.float32, np.float64):
            features = features.astype(np.float32)
        features = np.ascontiguousarray(features)
        labels = np.ascontiguousarray(self.labels, dtype=np.float32).ravel()
        sizes = np.ascontiguousarray(self.group_sizes, dtype=np.int64).ravel()
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "group_sizes", sizes)
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        if features.ndim != 2:
            raise DataError("features must be a 2-D array", value=features.shape)
        if len(self.feature_names) != features.shape[1]:
            raise DataError(
                "one feature name per column",
                value=len(self.feature_names),
                expected=f"{features.shape[1]} names",
            )
        if labels.shape != (features.shape[0],):
            raise DataError(
                "one label per row", value=labels.shape, expected=f"({features.shape[0]},)"
            )
        if sizes.size and sizes.min() < 1:
            raise DataError("every query group needs at least one row", value=int(sizes.min()))
        if int(sizes.sum()) != features.shape[0]:
            raise DataError(
                "the group sizes must sum to the number of rows",
                value=int(sizes.sum()),
                expected=str(features.shape[0]),
            )
        if not np.isfinite(features).all():
            raise DataError("features must be finite", expected="no NaN or infinity")
        if not np.isfinite(labels).all() or (labels.size and labels.min() < 0):
            raise DataError("labels must be finite and >= 0")

    @property
    def n_rows(self) -> int:
        """Rows (query, document pairs)."""
        return int(self.features.shape[0])

    @property
    def n_queries(self) -> int:
        """Query groups."""
        return int(self.group_sizes.size)

    @property
    def n_features(self) -> int:
        """Feature columns."""
        return int(self.features.shape[1])

    @property
    def offsets(self) -> np.ndarray:
        """``(n_queries + 1,)`` int64 start of each group, then ``n_rows``."""
        return np.concatenate([[0], np.cumsum(self.group_sizes)]).astype(np.int64)

    def take(self, queries: Sequence[int] | np.ndarray) -> QueryGroups:
        """The groups ``queries`` (in the order given) as a new :class:`QueryGroups`."""
        queries = np.asarray(queries, dtype=np.int64)
        offsets = self.offsets
        rows = (
            np.concatenate([np.arange(offsets[q], offsets[q + 1]) for q in queries])
            if queries.size
            else np.zeros(0, dtype=np.int64)
        )
        return QueryGroups(
            features=self.features[rows],
            labels=self.labels[rows],
            group_sizes=self.group_sizes[queries],
            feature_names=self.feature_names,
        )
