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
_COMPARE_FACTOR = 16
"""Up to this many judgements per user, lists are matched by direct comparison."""
_COMPARE_ENTRIES = 1 << 22
"""Comparisons per chunk when matching by direct comparison (a 4 MB boolean block)."""


class RankedRelevance:
    """The relevance of each user's top-K list, the input of every metric here.

    Two ways in: :meth:`from_lists` matches top-K lists with judgements (dense ``[users, K]``
    matrices), :meth:`from_ranks` takes each judged item's rank directly (e.g. for a shared
    ranking, where a rank is known without building lists) and keeps only the relevant
    entries. The metrics read the relevant entries (:func:`_entries`) either way; the dense
    matrices of a :meth:`from_ranks` relevance are built on first access, equal to what
    :meth:`from_lists` would hold for the same lists.

    Attributes:
        grades: ``float64 [users, K]``, the grade of the item at each rank (``0``: not relevant
            or padding).
        ideal: ``float64 [users, K]``, each user's grades sorted in decreasing order,
            zero-padded (the ideal list for IDCG).
        n_relevant: ``int64 [users]``, :math:`|R|`, always ``>= 1``.
    """

    def __init__(self, grades: np.ndarray, ideal: np.ndarray, n_relevant: np.ndarray) -> None:
        self._grades: np.ndarray | None = grades
        self._ideal: np.ndarray | None = ideal
        self.n_relevant = n_relevant
        self.n_users, self._depth = (int(n) for n in grades.shape)
        self._cache: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"RankedRelevance(users={self.n_users}, depth={self.depth})"

    @property
    def depth(self) -> int:
        """``K``, the length of the lists (the largest usable cutoff)."""
        return self._depth

    @property
    def grades(self) -> np.ndarray:
        """``float64 [users, K]``: the grade at each rank (built from the entries if needed)."""
        if self._grades is None:
            self._grades = self._dense("list")
        return self._grades

    @property
    def ideal(self) -> np.ndarray:
        """``float64 [users, K]``: the ideal lists (built from the entries if needed)."""
        if self._ideal is None:
            self._ideal = self._dense("ideal")
        return self._ideal

    def _dense(self, which: str) -> np.ndarray:
        rows, ranks, values = _entries(self, which)[:3]
        matrix = np.zeros((self.n_users, self.depth))
        matrix[rows, ranks] = values
        return matrix

    @classmethod
    def from_ranks(
        cls,
        depth: int,
        rel_position: np.ndarray,
        rel_ranks: np.ndarray,
        rel_grades: np.ndarray | None = None,
        *,
        n_users: int,
    ) -> RankedRelevance:
        """The relevance of top-``depth`` lists known through the rank of each judged item.

        Equal (every metric bit for bit, and the dense matrices) to :meth:`from_lists` of
        lists that hold judgement ``j``'s item at rank ``rel_ranks[j]`` of row
        ``rel_position[j]`` whenever ``0 <= rel_ranks[j] < depth``, and no judged item
        elsewhere. Cost: ``O(judgements)`` plus a sort of the entries ranked within
        ``depth`` (none when each user has one judgement), instead of ``O(users x K)``.

        Args:
            depth: ``K``, the list length, ``>= 1``.
            rel_position: For each judgement, the user's row; sorted ascending.
            rel_ranks: The 0-based rank of each judged item in its user's ranking, or ``-1``
                when it is not ranked (excluded, or never recommended). Ranks ``>= depth``
                are outside the list.
            rel_grades: Grades ``> 0`` (default: all ``1``, binary relevance).
            n_users: Rows.

        Raises:
            DataError: A grade is not ``> 0``, a user has no judgement, judgements are not
                sorted by row, or two judgements of one user share a rank.
            ConfigError: ``depth < 1``.
        """
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        rel_position = np.asarray(rel_position, dtype=np.int64)
        rel_ranks = np.asarray(rel_ranks, dtype=np.int64)
        grades = _grades(rel_grades, len(rel_position))
        n_relevant = _check_judgements(rel_position, grades, n_users)
        keep = (rel_ranks >= 0) & (rel_ranks < depth)
        rows, ranks, values = rel_position[keep], rel_ranks[keep], grades[keep]
        keys = rows * depth + ranks
        if len(keys) > 1 and np.any(keys[1:] <= keys[:-1]):
            order = np.argsort(keys, kind="stable")
            rows, ranks, values, keys = rows[order], ranks[order], values[order], keys[order]
            if np.any(keys[1:] == keys[:-1]):
                raise DataError(
                    "two judgements of one user share a rank", expected="distinct ranks"
                )
        relevance = cls.__new__(cls)
        relevance._grades = relevance._ideal = None
        relevance.n_relevant = n_relevant
        relevance.n_users, relevance._depth = n_users, depth
        relevance._cache = {}
        _store_entries(relevance._cache, "list", rows, ranks, values)
        if len(grades) and grades.min() == grades.max():
            # One grade (binary relevance): the ideal list is that grade at ranks < |R|.
            length = np.minimum(n_relevant, depth)
            starts = np.cumsum(length) - length
            ideal_rows = np.repeat(np.arange(n_users, dtype=np.int64), length)
            ideal_ranks = np.arange(len(ideal_rows), dtype=np.int64) - starts[ideal_rows]
            ideal_values = np.full(len(ideal_rows), grades[0])
        else:
            ideal_rows, ideal_ranks, ideal_values = _ideal_entries(
                rel_position, grades, n_relevant, depth
            )
        _store_entries(relevance._cache, "ideal", ideal_rows, ideal_ranks, ideal_values)
        return relevance

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
        grades = _grades(rel_grades, len(rel_items))
        if len(rel_items) and rel_items.min() < 0:
            raise DataError(
                "judged items must be item codes", value=int(rel_items.min()), expected=">= 0"
            )
        n_relevant = _check_judgements(rel_position, grades, n_users)
        span = max(int(top_items.max(initial=0)), int(rel_items.max(initial=0))) + 1
        keys = rel_position * span + rel_items
        order = np.argsort(keys, kind="stable")
        keys, sorted_grades = keys[order], grades[order]
        if len(keys) > 1 and np.any(keys[1:] == keys[:-1]):
            raise DataError("a (user, item) pair is judged twice", expected="one judgement each")
        ranked = _match(top_items, rel_position, rel_items, grades, keys, sorted_grades, span)
        # Ideal list: each user's grades in decreasing order, truncated or zero-padded to K.
        if len(grades) and grades.min() == grades.max():
            # One grade (binary relevance): the ideal list is that grade at ranks < |R|.
            fill = np.arange(depth)[None, :] < n_relevant[:, None]
            ideal = np.where(fill, grades[0], 0.0)
        else:
            ideal = np.zeros((n_users, depth))
            rows, ranks, values = _ideal_entries(rel_position, grades, n_relevant, depth)
            ideal[rows, ranks] = values
        return cls(grades=ranked, ideal=ideal, n_relevant=n_relevant)


def _grades(rel_grades: np.ndarray | None, n: int) -> np.ndarray:
    """The judgements' relevance grades as float64 (binary relevance: all ones)."""
    return np.ones(n) if rel_grades is None else np.asarray(rel_grades, dtype=np.float64)


def _check_judgements(rel_position: np.ndarray, grades: np.ndarray, n_users: int) -> np.ndarray:
    """``|R|`` per user, after checking grades ``> 0``, rows sorted and no user left out."""
    if np.any(~(grades > 0)):
        bad = grades[~(grades > 0)][:5].tolist()
        raise DataError("relevance grades must be > 0", value=bad, expected="grades > 0")
    if np.any(np.diff(rel_position) < 0):
        raise DataError("judgements must be sorted by user row")
    n_relevant = np.bincount(rel_position, minlength=n_users).astype(np.int64)
    if len(n_relevant) > n_users:
        raise DataError(
            "a judgement's row is past the last user",
            value=int(rel_position.max()),
            expected=f"rows < {n_users}",
        )
    if n_users and n_relevant.min() == 0:
        raise DataError(
            "every user needs at least one relevant item",
            value=f"{int((n_relevant == 0).sum())} users without",
            expected="users with no test items to be excluded before ranking",
        )
    return n_relevant


def _ideal_entries(
    rel_position: np.ndarray, grades: np.ndarray, n_relevant: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, ranks, grades)`` of the ideal lists: each user's grades in decreasing order,
    truncated to ``depth``, in row-major order."""
    by_grade = np.lexsort((-grades, rel_position))
    starts = np.cumsum(n_relevant) - n_relevant
    rank = np.arange(len(grades)) - starts[rel_position[by_grade]]
    keep = rank < depth
    return rel_position[by_grade][keep], rank[keep], grades[by_grade][keep]


def _match(
    top_items: np.ndarray,
    rel_position: np.ndarray,
    rel_items: np.ndarray,
    grades: np.ndarray,
    keys: np.ndarray,
    sorted_grades: np.ndarray,
    span: int,
) -> np.ndarray:
    """``float64 [users, K]``: the grade of each list entry that is judged, else ``0``.

    With few judgements per user (leave-one-out: one), each judgement is compared with its
    user's K list entries (``O(judgements x K)``, in chunks of at most ``_COMPARE_ENTRIES``);
    with many, every list entry is looked up among the sorted judgement keys
    (``O(users x K x log judgements)``). Both give the same matrix; padding (``-1``) never
    matches, as judged items are codes ``>= 0``.
    """
    n_users, depth = top_items.shape
    ranked = np.zeros((n_users, depth))
    if not len(keys) or not depth:
        return ranked
    if len(rel_items) <= _COMPARE_FACTOR * n_users:
        step = max(1, _COMPARE_ENTRIES // depth)
        for start in range(0, len(rel_items), step):
            rows = rel_position[start : start + step]
            which, rank = np.nonzero(top_items[rows] == rel_items[start : start + step, None])
            ranked[rows[which], rank] = grades[start : start + step][which]
        return ranked
    query = np.arange(n_users, dtype=np.int64)[:, None] * span + top_items
    found = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    match = (top_items >= 0) & (keys[found] == query)
    ranked[match] = sorted_grades[found[match]]
    return ranked


def _check_k(relevance: RankedRelevance, k: int) -> None:
    if not 1 <= k <= relevance.depth:
        raise ConfigError(f"cutoff k must be in [1, {relevance.depth}], got {k}")


def _discount(k: int) -> np.ndarray:
    """:math:`1 / \\log_2(j + 1)` for ranks ``j = 1..k``."""
    if k not in _DISCOUNT_CACHE:
        _DISCOUNT_CACHE[k] = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    return _DISCOUNT_CACHE[k]


def _entries(relevance: RankedRelevance, which: str) -> tuple[np.ndarray, ...]:
    """The relevant entries of the lists (``which="list"``) or of the ideal lists (``"ideal"``).

    Returns ``(rows, ranks, values, ordinal)``: for every entry with a grade ``> 0``, in
    row-major order (user, then rank, ascending), its user row, its 0-based rank, its grade
    and its 1-based ordinal among that user's relevant entries. Computed once per
    :class:`RankedRelevance` and reused by every metric and cutoff.

    Every metric at cutoff ``k`` is a per-user sum over the entries with ``rank < k``, taken
    with ``np.bincount`` in row-major order: the same additions in the same order as a running
    sum along the row (adding the ``0.0`` of a non-relevant entry changes no float), so the
    values are bit-identical to ``cumsum`` over the dense ``[users, K]`` rows, at a cost in the
    number of relevant entries instead of ``users x K``.
    """
    key = f"entries:{which}"
    cache = relevance._cache
    if key + ":rows" not in cache:
        matrix = relevance.grades if which == "list" else relevance.ideal
        rows, ranks = np.nonzero(matrix > 0)
        _store_entries(cache, which, rows, ranks, matrix[rows, ranks])
    return tuple(cache[f"{key}:{part}"] for part in ("rows", "ranks", "values", "ordinal", "first"))


def _store_entries(
    cache: dict[str, np.ndarray],
    which: str,
    rows: np.ndarray,
    ranks: np.ndarray,
    values: np.ndarray,
) -> None:
    """Cache the entries of :func:`_entries` from their rows, ranks and values (row-major)."""
    key = f"entries:{which}"
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    position = np.arange(len(rows))
    ordinal = position - np.maximum.accumulate(np.where(first, position, 0)) + 1
    cache[key + ":rows"] = rows
    cache[key + ":ranks"] = ranks
    cache[key + ":values"] = values
    cache[key + ":ordinal"] = ordinal
    cache[key + ":first"] = first


def _sum_within(
    relevance: RankedRelevance, which: str, k: int, weights: np.ndarray | None
) -> np.ndarray:
    """Per-user sum of ``weights`` (one per entry of :func:`_entries`) over ranks ``< k``;
    the count of those entries (``int64``) when ``weights`` is ``None``."""
    rows, ranks = _entries(relevance, which)[:2]
    keep = ranks < k
    n_users = relevance.n_users
    if weights is None:
        return np.bincount(rows[keep], minlength=n_users)
    return np.bincount(rows[keep], weights=weights[keep], minlength=n_users)


def _discounted(relevance: RankedRelevance, which: str, k: int, gain: str) -> np.ndarray:
    """DCG@k of the lists or of the ideal lists."""
    ranks, values = _entries(relevance, which)[1:3]
    terms = _gains(values, gain) * _discount(relevance.depth)[ranks]
    return _sum_within(relevance, which, k, terms)


def hits(relevance: RankedRelevance, k: int) -> np.ndarray:
    """Relevant items in the top ``k`` (``float64``)."""
    _check_k(relevance, k)
    return _sum_within(relevance, "list", k, None).astype(np.float64)


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
    return _discounted(relevance, "list", k, gain) / _discounted(relevance, "ideal", k, gain)


def mrr(relevance: RankedRelevance, k: int) -> np.ndarray:
    """Reciprocal rank of the first relevant item within the top ``k`` (``0`` if none)."""
    _check_k(relevance, k)
    rows, ranks, _, _, first_entry = _entries(relevance, "list")
    first = np.full(relevance.n_users, relevance.depth, dtype=np.int64)
    first[rows[first_entry]] = ranks[first_entry]
    return np.where(first < k, 1.0 / (first + 1.0), 0.0)


def hit_rate(relevance: RankedRelevance, k: int) -> np.ndarray:
    """``1`` if any relevant item is in the top ``k``, else ``0``."""
    _check_k(relevance, k)
    return (_sum_within(relevance, "list", k, None) > 0).astype(np.float64)


def average_precision(
    relevance: RankedRelevance, k: int, *, denominator: Denominator = "min_k_relevant"
) -> np.ndarray:
    """AP@k: precision at each relevant rank within ``k``, summed, over ``min(k, |R|)``."""
    _check_k(relevance, k)
    ranks, ordinal = _entries(relevance, "list")[1::2]
    summed = _sum_within(relevance, "list", k, ordinal / (ranks + 1.0))
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
