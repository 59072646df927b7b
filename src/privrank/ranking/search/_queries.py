r"""Search queries built from held-out interactions: the offline search task.

A user who later watched item :math:`h` is taken to have searched for what :math:`h` *is*: the
query is the set of genre words of :math:`h` (``"comedy romance"``), and the relevant results
are the user's held-out items that carry every query genre. The same construction makes the
training queries of the personalised ranker (from a validation part carved from training data)
and the test queries of the protocol (from the test part), so the ranker learns the task it is
evaluated on without ever seeing test items.

**Why genres and not titles.** A title's words name almost exactly one item, so a title query
is answered by lexical matching alone and there is nothing left to personalise (the task is
degenerate). A genre set is matched by many items (``min_matches`` at least, over the whole
catalogue), so the query says *what kind* of item is wanted and the history has to say *which*.
Items whose genre set is matched by fewer than ``min_matches`` catalogue items are not used as
query seeds (they would make a near-unique query); a user with no eligible held-out item gets
no query, and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privrank.data.item_text import ItemText

__all__ = ["SearchQuery", "build_queries", "genre_matches"]


@dataclass(frozen=True)
class SearchQuery:
    """One offline search query.

    Attributes:
        user: The user's code in the interactions the query was built from.
        text: The query text (lower-case genre words, space-separated).
        genres: The query's genres.
        seed_item: The held-out item code the query was built from.
        relevant: Codes of the user's held-out items carrying every query genre (sorted).
    """

    user: int
    text: str
    genres: tuple[str, ...]
    seed_item: int
    relevant: np.ndarray


def genre_matches(genres: list[frozenset[str]], query: frozenset[str]) -> np.ndarray:
    """Codes of the items whose genre set holds every genre of ``query``."""
    return np.asarray([i for i, g in enumerate(genres) if query <= g], dtype=np.int64)


def build_queries(
    text: ItemText,
    rows: np.ndarray,
    heldout_indptr: np.ndarray,
    heldout_items: np.ndarray,
    *,
    seed: int,
    min_matches: int = 20,
) -> tuple[list[SearchQuery], dict[str, int]]:
    """One query per user from the user's held-out items.

    Args:
        text: The item text.
        rows: For each item code, its row in ``text`` (``-1``: no text; see
            :meth:`ItemText.align`).
        heldout_indptr: Offsets of each user's held-out items (CSR-style, ``n_users + 1``).
        heldout_items: The held-out item codes.
        seed: Seed of the choice of each user's seed item.
        min_matches: Least number of catalogue items that must carry the query's genres.

    Returns:
        The queries (in user order) and counts: ``users_with_heldout``,
        ``users_without_query`` (no held-out item with an eligible genre set), ``queries``.
    """
    genres = [frozenset(text.genres[r]) if r >= 0 else frozenset() for r in rows]
    match_count: dict[frozenset[str], int] = {}
    rng = np.random.default_rng(seed)
    queries: list[SearchQuery] = []
    with_heldout = without = 0
    for user in range(len(heldout_indptr) - 1):
        items = heldout_items[heldout_indptr[user] : heldout_indptr[user + 1]]
        if len(items) == 0:
            continue
        with_heldout += 1
        eligible = []
        for item in items.tolist():
            wanted = genres[item]
            if not wanted:
                continue
            if wanted not in match_count:
                match_count[wanted] = len(genre_matches(genres, wanted))
            if match_count[wanted] >= min_matches:
                eligible.append(item)
        if not eligible:
            without += 1
            continue
        seed_item = int(eligible[rng.integers(len(eligible))])
        wanted = genres[seed_item]
        ordered = tuple(sorted(wanted))
        relevant = np.unique(np.asarray([i for i in items.tolist() if wanted <= genres[i]]))
        queries.append(
            SearchQuery(
                user=user,
                text=" ".join(g.lower() for g in ordered),
                genres=ordered,
                seed_item=seed_item,
                relevant=relevant.astype(np.int64),
            )
        )
    counts = {
        "users_with_heldout": with_heldout,
        "users_without_query": without,
        "queries": len(queries),
    }
    return queries, counts
