"""The metrics layer's previous implementation (main c5649cd), kept as the exactness oracle.

``reference_from_lists`` matches top-K lists with judgements by one ``searchsorted`` of every
list entry, and ``reference_cumulative`` takes running sums along whole ``[users, K]`` rows;
the fast code in :mod:`privrank.metrics.ranking` must give bit-identical metrics.
"""

from __future__ import annotations

import numpy as np

from privrank.errors import DataError
from privrank.metrics.ranking import RankedRelevance, _discount, _gains


def reference_from_lists(
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
        np.ones(len(rel_items)) if rel_grades is None else np.asarray(rel_grades, dtype=np.float64)
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
    return RankedRelevance(grades=ranked.astype(np.float64), ideal=ideal, n_relevant=n_relevant)


def reference_cumulative(relevance: RankedRelevance, key: str) -> np.ndarray:
    """Running sums along the list, computed once per :class:`RankedRelevance` and reused.

    Every metric at cutoff ``k`` reads column ``k - 1`` of one of these, so computing many
    cutoffs costs about as much as one. Sums run row by row in rank order, so a user's value
    never depends on the other users of the batch.
    """
    cache = relevance._cache
    if "ref:" + key not in cache:
        depth = relevance.depth
        if key == "hits":
            cache["ref:" + key] = np.cumsum(relevance.grades > 0, axis=1)
        elif key == "precision_at_hits":
            hit = relevance.grades > 0
            ranks = np.arange(1, depth + 1, dtype=np.float64)
            cache["ref:" + key] = np.cumsum(
                hit * (reference_cumulative(relevance, "hits") / ranks), axis=1
            )
        elif key == "first_hit":
            hit = relevance.grades > 0
            cache["ref:" + key] = np.where(hit.any(axis=1), hit.argmax(axis=1), depth)
        else:  # "dcg:<gain>" or "idcg:<gain>"
            kind, gain = key.split(":")
            grades = relevance.grades if kind == "dcg" else relevance.ideal
            cache["ref:" + key] = np.cumsum(_gains(grades, gain) * _discount(depth), axis=1)
    return cache["ref:" + key]


def reference_metric(
    name: str,
    relevance: RankedRelevance,
    k: int,
    gain: str = "linear",
    recall_denominator: str = "relevant",
    map_denominator: str = "min_k_relevant",
) -> np.ndarray:
    """One metric of the previous implementation, from its running sums."""
    n_rel = relevance.n_relevant

    def denominator(kind: str) -> np.ndarray:
        return (n_rel if kind == "relevant" else np.minimum(n_rel, k)).astype(np.float64)

    if name in ("recall", "precision", "hit_rate"):
        hits = reference_cumulative(relevance, "hits")[:, k - 1]
        if name == "hit_rate":
            return (hits > 0).astype(np.float64)
        hits = hits.astype(np.float64)
        return hits / k if name == "precision" else hits / denominator(recall_denominator)
    if name == "ndcg":
        dcg = reference_cumulative(relevance, f"dcg:{gain}")[:, k - 1]
        return dcg / reference_cumulative(relevance, f"idcg:{gain}")[:, k - 1]
    if name == "mrr":
        first = reference_cumulative(relevance, "first_hit")
        return np.where(first < k, 1.0 / (first + 1.0), 0.0)
    assert name == "map"
    summed = reference_cumulative(relevance, "precision_at_hits")[:, k - 1]
    return summed / denominator(map_denominator)
