r"""Per-user ranking metrics from top-K lists and graded relevance.

Notation, for one user: the top-K list is :math:`i_1, \dots, i_K` (the ranking rule of
:mod:`privrank.metrics.topk`; padding entries are never relevant), :math:`\mathrm{rel}(i) > 0`
is the relevance grade of a relevant item (``1`` for binary relevance) and ``0`` for any other
item, :math:`R` is the set of relevant items, :math:`|R| \ge 1`, and
:math:`\mathrm{hits}@k = |\{j \le k : \mathrm{rel}(i_j) > 0\}|`. Every function returns one
value per user (``float64``), for a cutoff ``k <= K``:

* ``recall``: :math:`\mathrm{hits}@k / |R|` (``denominator="relevant"``, the default) or
  :math:`\mathrm{hits}@k / \min(k, |R|)` (``denominator="min_k_relevant"``, which reaches 1 for
  a perfect list when :math:`|R| > k`).
* ``precision``: :math:`\mathrm{hits}@k / k` (a short, padded list still divides by ``k``).
* ``ndcg``: :math:`\mathrm{DCG}@k / \mathrm{IDCG}@k` with
  :math:`\mathrm{DCG}@k = \sum_{j=1}^{k} g(\mathrm{rel}(i_j)) / \log_2(j + 1)` and
  :math:`\mathrm{IDCG}@k` the same sum over the user's grades sorted in decreasing order (the
  ideal list, truncated to ``k``). Gains: ``binary`` :math:`g(r) = [r > 0]`; ``linear``
  :math:`g(r) = r` (Järvelin & Kekäläinen, ranx's ``ndcg``, trec_eval); ``exponential``
  :math:`g(r) = 2^r - 1` (Burges et al., ranx's ``ndcg_burges``). All three coincide for binary
  relevance. The default is ``linear``.
* ``mrr``: :math:`1 / j^*` with :math:`j^*` the rank of the first relevant item within the top
  ``k``, ``0`` if there is none.
* ``hit_rate``: :math:`[\mathrm{hits}@k > 0]`.
* ``average_precision`` (MAP@k when averaged):
  :math:`\frac{1}{D} \sum_{j=1}^{k} [\mathrm{rel}(i_j) > 0]\, \mathrm{hits}@j / j` with
  :math:`D = \min(k, |R|)` (``denominator="min_k_relevant"``, the default; a perfect list
  scores 1, as in implicit and RecBole) or :math:`D = |R|` (``"relevant"``, as ranx and
  trec_eval).

Relevant items that cannot be retrieved (e.g. a test item that is also a training item, when
training items are excluded) still count in :math:`|R|` and in the ideal list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from privrank.errors import ConfigError, DataError

__all__ = [
    "Denominator",
    "Gain",
    "RankedRelevance",
    "average_precision",
    "compute",
    "hit_rate",
    "hits",
    "mrr",
    "ndcg",
    "precision",
    "recall",
]

Gain = Literal["binary", "linear", "exponential"]
Denominator = Literal["relevant", "min_k_relevant"]

_DISCOUNT_CACHE: dict[int, np.ndarray] = {}


@dataclass(frozen=True)
class RankedRelevance:
    """The relevance of each user's top-K list, the input of every metric here.

    Attributes:
        grades: ``float64 [users, K]``, the grade of the item at each rank (``0``: not relevant
            or padding).
        ideal: ``float64 [users, K]``, each user's grades sorted in decreasing order,
            zero-padded (the ideal list for IDCG).
        n_relevant: ``int64 [users]``, :math:`|R|`, always ``>= 1``.
    """

    grades: np.ndarray
    ideal: np.ndarray
    n_relevant: np.ndarray
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def depth(self) -> int:
        """``K``, the length of the lists (the largest usable cutoff)."""
        return self.grades.shape[1]

    @classmethod
    def from_lists(
        cls,
        top_items: np.ndarray,
        rel_position: np.ndarray,
        rel_items: np.ndarray,
        rel_grades: np.ndarray | None = None,
    ) -> RankedRelevance:
        """Match top-K lists with relevance judgements.

        Args:
            top_items: ``int [users, K]`` item codes, ``-1`` for padding.
            rel_position: For each judgement, the user's row in ``top_items``; sorted ascending.
            rel_items: The judged item of each judgement (one judgement per user and item).
            rel_grades: Grades ``> 0`` (default: all ``1``, binary relevance).

        Returns:
            The matched relevance.

        Raises:
            DataError: A grade is not ``> 0``, a user has no judgement, or a (user, item) pair
                is judged twice.
        """
        top_items = np.asarray(top_items)
        n_users, depth = top_items.shape
        rel_position = np.asarray(rel_position, dtype=np.int64)
        rel_items = np.asarray(rel_items, dtype=np.int64)
        grades = (
            np.ones(len(rel_items))
            if rel_grades is None
            else np.asarray(rel_grades, dtype=np.float64)
        )
        if np.any(~(grades > 0)):
            bad = grades[~(grades > 0)][:5].tolist()
            raise DataError("relevance grades must be > 0", value=bad, expected="grades > 0")
        if np.any(np.diff(rel_position) < 0):
            raise DataError("judgements must be sorted by user row")
        n_relevant = np.bincount(rel_position, minlength=n_users).astype(np.int64)
        if n_users and n_relevant.min() == 0:
            raise DataError(
                "every user needs at least one relevant item",
                value=f"{int((n_relevant == 0).sum())} users without",
                expected="users with no test items to be excluded before ranking",
            )
        span = max(int(top_items.max(initial=0)), int(rel_items.max(initial=0))) + 1
        keys = rel_position * span + rel_items
        order = np.argsort(keys, kind="stable")
        keys, sorted_grades = keys[order], grades[order]
        if len(keys) > 1 and np.any(keys[1:] == keys[:-1]):
            raise DataError("a (user, item) pair is judged twice", expected="one judgement each")
        query = np.arange(n_users, dtype=np.int64)[:, None] * span + top_items
        found = np.searchsorted(keys, query)
        found_clipped = np.minimum(found, max(len(keys) - 1, 0))
        match = (top_items >= 0) & (found < len(keys))
        if len(keys):
            match &= keys[found_clipped] == query
        ranked = np.where(match, sorted_grades[found_clipped] if len(keys) else 0.0, 0.0)
        # Ideal list: each user's grades in decreasing order, truncated or zero-padded to K.
        by_grade = np.lexsort((-grades, rel_position))
        starts = np.cumsum(n_relevant) - n_relevant
        rank = np.arange(len(grades)) - starts[rel_position[by_grade]]
        keep = rank < depth
        ideal = np.zeros((n_users, depth))
        ideal[rel_position[by_grade][keep], rank[keep]] = grades[by_grade][keep]
        return cls(grades=ranked.astype(np.float64), ideal=ideal, n_relevant=n_relevant)


def _check_k(relevance: RankedRelevance, k: int) -> None:
    if not 1 <= k <= relevance.depth:
        raise ConfigError(f"cutoff k must be in [1, {relevance.depth}], got {k}")


def _discount(k: int) -> np.ndarray:
    """:math:`1 / \\log_2(j + 1)` for ranks ``j = 1..k``."""
    if k not in _DISCOUNT_CACHE:
        _DISCOUNT_CACHE[k] = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    return _DISCOUNT_CACHE[k]


def _cumulative(relevance: RankedRelevance, key: str) -> np.ndarray:
    """Running sums along the list, computed once per :class:`RankedRelevance` and reused.

    Every metric at cutoff ``k`` reads column ``k - 1`` of one of these, so computing many
    cutoffs costs about as much as one. Sums run row by row in rank order, so a user's value
    never depends on the other users of the batch.
    """
    cache = relevance._cache
    if key not in cache:
        depth = relevance.depth
        if key == "hits":
            cache[key] = np.cumsum(relevance.grades > 0, axis=1)
        elif key == "precision_at_hits":
            hit = relevance.grades > 0
            ranks = np.arange(1, depth + 1, dtype=np.float64)
            cache[key] = np.cumsum(hit * (_cumulative(relevance, "hits") / ranks), axis=1)
        elif key == "first_hit":
            hit = relevance.grades > 0
            cache[key] = np.where(hit.any(axis=1), hit.argmax(axis=1), depth)
        else:  # "dcg:<gain>" or "idcg:<gain>"
            kind, gain = key.split(":")
            grades = relevance.grades if kind == "dcg" else relevance.ideal
            cache[key] = np.cumsum(_gains(grades, gain) * _discount(depth), axis=1)
    return cache[key]


def hits(relevance: RankedRelevance, k: int) -> np.ndarray:
    """Relevant items in the top ``k`` (``float64``)."""
    _check_k(relevance, k)
    return _cumulative(relevance, "hits")[:, k - 1].astype(np.float64)


def _denominator(relevance: RankedRelevance, k: int, denominator: Denominator) -> np.ndarray:
    if denominator == "relevant":
        return relevance.n_relevant.astype(np.float64)
    if denominator == "min_k_relevant":
        return np.minimum(relevance.n_relevant, k).astype(np.float64)
    raise ConfigError(f"denominator must be 'relevant' or 'min_k_relevant', got {denominator!r}")


def recall(
    relevance: RankedRelevance, k: int, *, denominator: Denominator = "relevant"
) -> np.ndarray:
    """Recall@k: hits in the top ``k`` over ``|R|`` (or ``min(k, |R|)``)."""
    return hits(relevance, k) / _denominator(relevance, k, denominator)


def precision(relevance: RankedRelevance, k: int) -> np.ndarray:
    """Precision@k: hits in the top ``k`` over ``k``."""
    return hits(relevance, k) / k


def _gains(grades: np.ndarray, gain: str) -> np.ndarray:
    if gain == "binary":
        return (grades > 0).astype(np.float64)
    if gain == "linear":
        return grades
    if gain == "exponential":
        return np.exp2(grades) - 1.0
    raise ConfigError(f"gain must be 'binary', 'linear' or 'exponential', got {gain!r}")


def ndcg(relevance: RankedRelevance, k: int, *, gain: Gain = "linear") -> np.ndarray:
    """NDCG@k: DCG of the list over DCG of the ideal list, both truncated at ``k``."""
    _check_k(relevance, k)
    if gain not in ("binary", "linear", "exponential"):
        raise ConfigError(f"gain must be 'binary', 'linear' or 'exponential', got {gain!r}")
    dcg = _cumulative(relevance, f"dcg:{gain}")[:, k - 1]
    idcg = _cumulative(relevance, f"idcg:{gain}")[:, k - 1]
    return dcg / idcg


def mrr(relevance: RankedRelevance, k: int) -> np.ndarray:
    """Reciprocal rank of the first relevant item within the top ``k`` (``0`` if none)."""
    _check_k(relevance, k)
    first = _cumulative(relevance, "first_hit")
    return np.where(first < k, 1.0 / (first + 1.0), 0.0)


def hit_rate(relevance: RankedRelevance, k: int) -> np.ndarray:
    """``1`` if any relevant item is in the top ``k``, else ``0``."""
    _check_k(relevance, k)
    return (_cumulative(relevance, "hits")[:, k - 1] > 0).astype(np.float64)


def average_precision(
    relevance: RankedRelevance, k: int, *, denominator: Denominator = "min_k_relevant"
) -> np.ndarray:
    """AP@k: precision at each relevant rank within ``k``, summed, over ``min(k, |R|)``."""
    _check_k(relevance, k)
    summed = _cumulative(relevance, "precision_at_hits")[:, k - 1]
    return summed / _denominator(relevance, k, denominator)


def compute(
    name: str,
    relevance: RankedRelevance,
    k: int,
    *,
    gain: Gain = "linear",
    recall_denominator: Denominator = "relevant",
    map_denominator: Denominator = "min_k_relevant",
) -> np.ndarray:
    """One metric by name (``recall``, ``precision``, ``ndcg``, ``mrr``, ``hit_rate``, ``map``)."""
    if name == "recall":
        return recall(relevance, k, denominator=recall_denominator)
    if name == "precision":
        return precision(relevance, k)
    if name == "ndcg":
        return ndcg(relevance, k, gain=gain)
    if name == "mrr":
        return mrr(relevance, k)
    if name == "hit_rate":
        return hit_rate(relevance, k)
    if name == "map":
        return average_precision(relevance, k, denominator=map_denominator)
    raise ConfigError(
        f"unknown metric {name!r}; expected recall, precision, ndcg, mrr, hit_rate or map"
    )
