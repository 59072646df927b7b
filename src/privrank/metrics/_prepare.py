"""Turning train/test :class:`~privrank.data.Interactions` into the arrays the evaluators use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError, DataError

__all__ = [
    "EvaluationPairs",
    "PairSet",
    "check_same_vocabulary",
    "evaluation_pairs",
    "pair_set",
    "prepare_pairs",
]


@dataclass(frozen=True)
class PairSet:
    """Duplicate-free (user, item) pairs as a CSR structure with optional grades.

    Attributes:
        indptr: ``int64 [n_users + 1]`` row pointer.
        indices: ``int64`` item codes, ascending within each user.
        grades: ``float64`` grade of each pair, or ``None`` (binary).
        n_users: Rows.
        n_items: Columns.
    """

    indptr: np.ndarray
    indices: np.ndarray
    grades: np.ndarray | None
    n_users: int
    n_items: int

    def counts(self) -> np.ndarray:
        """Pairs per user."""
        return np.diff(self.indptr)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each ``(users[e], items[e])`` pair is in the set."""
        keys = _row_of(self.indptr) * self.n_items + self.indices
        query = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)
        found = np.searchsorted(keys, query)
        inside = found < len(keys)
        hit = np.zeros(len(query), dtype=bool)
        hit[inside] = keys[found[inside]] == query[inside]
        return hit


def check_same_vocabulary(train: Interactions, test: Interactions) -> None:
    """Raise :class:`ConfigError` unless train and test share their user and item id maps."""
    problems = []
    for name, a, b in (
        ("users", train.user_ids, test.user_ids),
        ("items", train.item_ids, test.item_ids),
    ):
        if len(a) != len(b) or not a.equals(b):
            problems.append(f"{name} ({len(a)} in train, {len(b)} in test)")
    if problems:
        raise ConfigError(
            "train and test must share one vocabulary (split one Interactions); they differ in "
            + " and ".join(problems)
        )


def pair_set(data: Interactions, *, graded: bool = False) -> PairSet:
    """The distinct (user, item) pairs of ``data``, with the largest value as grade if graded.

    Raises:
        ConfigError: ``graded`` but the data has no ``value`` column.
        DataError: ``graded`` and a value is not ``> 0`` (a grade must mark a relevant item).
    """
    n_users, n_items = data.n_users, data.n_items
    keys = data.users().astype(np.int64) * n_items + data.items()
    values = None
    if graded:
        values = data.values()
        if values is None:
            raise ConfigError(
                f"graded relevance needs a value column; {data.metadata.name!r} has none"
            )
        values = values.astype(np.float64)
        bad = ~(values > 0)
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} test values are not > 0",
                field="value",
                value=values[bad][:5].tolist(),
                expected="grades > 0 (every test interaction is relevant)",
            )
    grades = None
    if values is None:
        # Binary: the sorted distinct keys are all we need (a sort, no argsort and gather).
        unique = np.sort(keys)
        if len(unique) > 1:
            new = unique[1:] != unique[:-1]
            if not new.all():
                unique = unique[np.concatenate(([True], new))]
    else:
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        starts = np.flatnonzero(first)
        unique = keys[starts]
        grades = np.maximum.reduceat(values[order], starts) if len(starts) else values[:0]
    users = unique // n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return PairSet(indptr, unique - users * n_items, grades, n_users, n_items)


def evaluation_pairs(
    train: Interactions, test: Interactions, *, graded: bool = False
) -> tuple[PairSet, PairSet, np.ndarray]:
    """What an evaluation ranks against: ``(seen, relevant, users)``.

    ``seen`` holds the train pairs (excluded from the rankings), ``relevant`` the test pairs
    (graded if ``graded``) and ``users`` the codes of the users with a test pair (int64,
    ascending), the users evaluated.

    Raises:
        ConfigError: Train and test have different id maps, or ``graded`` without a value
            column.
        DataError: ``graded`` and a test value is not ``> 0``.
    """
    check_same_vocabulary(train, test)
    seen = pair_set(train)
    relevant = pair_set(test, graded=graded)
    users = np.flatnonzero(relevant.counts() > 0).astype(np.int64)
    return seen, relevant, users


@dataclass(frozen=True)
class EvaluationPairs:
    """The pair sets and counts of one (train, test) split, built once and reused by every
    evaluation of that split (:func:`prepare_pairs`).

    Attributes:
        train: The training interactions they were built from (checked by identity).
        test: The test interactions they were built from (checked by identity).
        graded: Whether ``relevant`` carries grades.
        seen: The train pairs (excluded from the rankings).
        relevant: The test pairs.
        users: Codes of the users with a test pair (``int64``, ascending).
        counts: Users evaluated, excluded (no test items), cold (no training items), test
            pairs and test pairs that are training pairs too.
    """

    train: Any
    test: Any
    graded: bool
    seen: PairSet
    relevant: PairSet
    users: np.ndarray
    counts: dict[str, int]

    def check(self, train: Interactions, test: Interactions, *, graded: bool) -> None:
        """Raise :class:`ConfigError` unless these pairs were built from ``train`` and
        ``test`` (the same objects) with the same ``graded``."""
        if self.train is not train or self.test is not test or self.graded != graded:
            raise ConfigError(
                "the evaluation pairs were built from another train/test split or grading "
                f"(graded={self.graded}); build them with prepare_pairs(train, test, "
                f"graded={graded})"
            )


def prepare_pairs(
    train: Interactions, test: Interactions, *, graded: bool = False
) -> EvaluationPairs:
    """:func:`evaluation_pairs` and the evaluation's counts, for reuse across evaluations.

    Raises:
        ConfigError: Train and test have different id maps, or ``graded`` without a value
            column.
        DataError: ``graded`` and a test value is not ``> 0``.
    """
    seen, relevant, users = evaluation_pairs(train, test, graded=graded)
    rel_users = np.repeat(np.arange(relevant.n_users), relevant.counts())
    counts = {
        "users_evaluated": len(users),
        "users_without_test_items": int(relevant.n_users - len(users)),
        "cold_users": int(np.count_nonzero(seen.counts()[users] == 0)),
        "test_pairs": len(relevant.indices),
        "test_pairs_in_train": int(np.count_nonzero(seen.contains(rel_users, relevant.indices))),
    }
    return EvaluationPairs(train, test, graded, seen, relevant, users, counts)


def _row_of(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
