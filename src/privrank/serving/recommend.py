"""Answers of the read endpoints, computed from a served model version and external ids.

Filters apply in one place: the candidate set is every item (or the allow-list's known items)
minus the excluded ids; ``exclude_seen`` removes the user's history (or the ad-hoc history).
Ids the model does not know are ignored in filters. Fewer than ``k`` items come back when fewer
are eligible.

**Whose history.** For a user id, the history is the model's training history only when the
model is not private and was trained on that user; otherwise it is what the event store holds
for that id (``history_of``), folded in when the model can. A private model is served from its
release artifact (no training users), so its answers never depend on, and ``exclude_seen`` never
reveals, a training history.

**Cold start.** An answer computed without any history (an id the model does not know and the
event store has nothing for, or an empty ad-hoc history) is the model's popularity ranking; its
scores are replaced by rank scores ``1 / (1 + position)``, so they never disclose the training
counts. Whether an id was a training user is not part of any answer.

Personalised answers without an allow-list come from the served version's retrieval structure
when it has one: the FAISS index of a factor model (:mod:`privrank.serving.index`) or the sparse
neighbour matrix of an item-item model (:mod:`privrank.serving.neighbours`); everything else
(cold start, allow-lists, ranking given candidates, other models) is scored by the model itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privrank.errors import ConfigError
from privrank.models import Query
from privrank.serving.errors import ConflictError, NotFoundError
from privrank.serving.store import ServedModel

__all__ = [
    "Answer",
    "HistoryOf",
    "answered_from_retrieval",
    "needs_event_history",
    "rank_candidates",
    "recommend_history",
    "recommend_user",
    "similar_items",
]

HistoryOf = Callable[[Any], Sequence[Any]]
"""Looks up the item ids the serving database holds for a user id (the event store)."""


@dataclass(frozen=True)
class Answer:
    """Items best first with their scores.

    Attributes:
        item_ids: External item ids.
        scores: Their scores.
        cold_start: Whether the popularity fallback answered (its scores are rank scores).
            Internal: never sent to clients, as it would tell whether an id was a training
            user.
        unknown: Candidates the model does not know (ranking only).
    """

    item_ids: list[Any]
    scores: list[float]
    cold_start: bool
    unknown: list[Any]


def _known_codes(served: ServedModel, ids: Sequence[Any]) -> np.ndarray:
    codes = served.items.codes(ids)
    return np.unique(codes[codes >= 0])


def _candidates(
    served: ServedModel, exclude: Sequence[Any], allow: Sequence[Any] | None
) -> np.ndarray | None:
    """Candidate item codes, or ``None`` for every item."""
    excluded = _known_codes(served, exclude)
    if allow is None and excluded.size == 0:
        return None
    pool = np.arange(served.model.n_items_) if allow is None else _known_codes(served, allow)
    return np.setdiff1d(pool, excluded, assume_unique=True)


def _top(served: ServedModel, query: Query, k: int, exclude_seen: bool, candidates) -> tuple:
    model = served.model
    available = model.n_items_ if candidates is None else candidates.size
    k = min(k, available)
    if k == 0:
        return [], []
    codes, scores = model.recommend(query, k, exclude_seen=exclude_seen, items=candidates)
    keep = codes[0] >= 0
    return served.items.decode(codes[0][keep]), [float(s) for s in scores[0][keep]]


def _seen_codes(served: ServedModel, query: Query) -> np.ndarray:
    if query.user_codes is not None:  # a known user's query
        code = int(query.user_codes[0])
        indptr = served.model.history_indptr_
        return np.asarray(served.model.history_items_[indptr[code] : indptr[code + 1]])
    return np.asarray(query.items)


def _top_indexed(
    served: ServedModel, query: Query, k: int, exclude_seen: bool, excluded: np.ndarray
) -> tuple:
    """Top-k through the FAISS index: fetch enough to survive the exclusions, then drop
    them."""
    removed = set(excluded.tolist())
    if exclude_seen:
        removed.update(_seen_codes(served, query).tolist())
    k = min(k, served.model.n_items_ - len(removed))
    if k <= 0:
        return [], []
    index = served.index
    codes, scores = index.search(index.query_vectors(served.model, query), k + len(removed))
    pairs = zip(codes[0].tolist(), scores[0].tolist(), strict=True)
    chosen = [(c, s) for c, s in pairs if c >= 0 and c not in removed][:k]
    return served.items.decode([c for c, _ in chosen]), [float(s) for _, s in chosen]


def _top_neighbours(
    served: ServedModel, query: Query, k: int, exclude_seen: bool, excluded: np.ndarray
) -> tuple:
    """Top-k through the sparse neighbour matrix (history row × matrix)."""
    history = _seen_codes(served, query)
    removed = set(excluded.tolist())
    if exclude_seen:
        removed.update(history.tolist())
    k = min(k, served.model.n_items_ - len(removed))
    if k <= 0:
        return [], []
    codes, scores = served.neighbours.top(history, k, removed)
    return served.items.decode(codes), [float(s) for s in scores]


def _rank_scores(n: int) -> list[float]:
    """``1 / (1 + position)``: what a cold-start answer shows instead of popularity counts."""
    return [1.0 / (1 + position) for position in range(n)]


def _answer(
    served: ServedModel,
    query: Query,
    cold: bool,
    k: int,
    exclude_seen: bool,
    exclude: Sequence[Any],
    allow: Sequence[Any] | None,
) -> tuple:
    if not cold and allow is None:
        if served.index is not None:
            return _top_indexed(served, query, k, exclude_seen, _known_codes(served, exclude))
        if served.neighbours is not None:
            return _top_neighbours(served, query, k, exclude_seen, _known_codes(served, exclude))
    ids, scores = _top(served, query, k, exclude_seen, _candidates(served, exclude, allow))
    return (ids, _rank_scores(len(ids))) if cold else (ids, scores)


def answered_from_retrieval(served: ServedModel, allow: Sequence[Any] | None) -> bool:
    """Whether a personalised top-k on ``served`` comes from its retrieval structure (a FAISS
    index or a neighbour matrix): a sub-millisecond search, cheap enough to run on the event
    loop. Everything else may score the whole catalogue with the model (a torch network, a
    dense matrix product) and is run in a worker thread.

    Two costs still land on the event loop with a retrieval structure: folding in a history
    from the event store (iALS ≈ 0.3 ms, BPR ≈ 3–5 ms per history, BENCHMARKS.md "BPR
    fold-in") and a cold answer (the popularity top-k over the catalogue, about 1 ms at 100k
    items). Both are bounded per request; neither scans the training data."""
    return allow is None and (served.index is not None or served.neighbours is not None)


def _fold_in_check(served: ServedModel, query: Query) -> None:
    model = served.model
    if not model.supports_fold_in and (query.lengths() > 0).any():
        raise ConflictError(
            f"the served model ({model.name}) cannot fold in ad-hoc histories; use a model "
            "that can (ease, itemknn, ials, ...) or recommend for known users"
        )


def _training_code(served: ServedModel, user_id: Any) -> int:
    """The user's code in a non-private model's training data, or -1 (a private model, or an
    id it was not trained on)."""
    return -1 if served.private else served.users.code(user_id)


def needs_event_history(served: ServedModel, user_id: Any) -> bool:
    """Whether answering for ``user_id`` reads the event store (``history_of``): every user of
    a private model, and anyone a non-private model was not trained on."""
    return _training_code(served, user_id) < 0


def _user_query(
    served: ServedModel, user_id: Any, history_of: HistoryOf | None
) -> tuple[Query, bool]:
    """The query for ``user_id`` and whether it is cold (no history at all).

    A non-private model's training user is queried by code (its training history). Anyone
    else, and every user of a private model, is queried by the history the event store holds
    (its unknown items skipped), folded in when the model can fold in.
    """
    code = _training_code(served, user_id)
    if code >= 0:
        indptr = served.model.history_indptr_
        return Query.users([code]), bool(indptr[code + 1] == indptr[code])
    history = [] if history_of is None else list(history_of(user_id))
    codes = served.items.codes(history)
    codes = codes[codes >= 0]
    if codes.size == 0 or not served.model.supports_fold_in:
        return Query.histories([[]]), True
    return Query.histories([codes]), False


def _history_query(served: ServedModel, history: Sequence[Any], ignore_unknown: bool) -> Query:
    codes = served.items.codes(history)
    unknown = codes < 0
    if unknown.any() and not ignore_unknown:
        raise ConfigError(
            f"the history holds {int(unknown.sum())} item id(s) the model was not trained on; "
            "send ignore_unknown_items=true to skip them"
        )
    query = Query.histories([codes[~unknown]])
    _fold_in_check(served, query)
    return query


def recommend_user(
    served: ServedModel,
    user_id: Any,
    k: int,
    *,
    exclude_seen: bool = True,
    exclude: Sequence[Any] = (),
    allow: Sequence[Any] | None = None,
    history_of: HistoryOf | None = None,
) -> Answer:
    """Top-k for a user id (see the module docstring for whose history is used)."""
    query, cold = _user_query(served, user_id, history_of)
    ids, scores = _answer(served, query, cold, k, exclude_seen, exclude, allow)
    return Answer(ids, scores, cold, [])


def recommend_history(
    served: ServedModel,
    history: Sequence[Any],
    k: int,
    *,
    exclude_seen: bool = True,
    exclude: Sequence[Any] = (),
    allow: Sequence[Any] | None = None,
    ignore_unknown_items: bool = True,
) -> Answer:
    """Top-k for an ad-hoc history of external item ids (folded in, never stored)."""
    query = _history_query(served, history, ignore_unknown_items)
    cold = bool(query.lengths()[0] == 0)
    ids, scores = _answer(served, query, cold, k, exclude_seen, exclude, allow)
    return Answer(ids, scores, cold, [])


def similar_items(served: ServedModel, item_id: Any, k: int) -> Answer:
    """The items the model relates to ``item_id``: its answer to a one-item history, the item
    itself left out.

    Raises:
        NotFoundError: The model does not know ``item_id``.
        ConflictError: The model does not relate items (popularity) or cannot fold in.
    """
    code = served.items.code(item_id)
    if code < 0:
        raise NotFoundError(f"the served model does not know item {item_id!r}")
    if not served.model.personalised:
        raise ConflictError(
            f"the served model ({served.model.name}) does not relate items to items"
        )
    query = Query.histories([[code]])
    _fold_in_check(served, query)
    ids, scores = _answer(served, query, False, k, True, (), None)
    return Answer(ids, scores, False, [])


def rank_candidates(
    served: ServedModel,
    candidates: Sequence[Any],
    *,
    user_id: Any = None,
    history: Sequence[Any] | None = None,
    history_of: HistoryOf | None = None,
) -> Answer:
    """Order ``candidates`` for a user id or an ad-hoc history (exactly one is given).

    Ties keep the caller's order. Candidates the model does not know are returned apart, in
    the caller's order.

    Raises:
        ConfigError: Both or neither of ``user_id`` and ``history``, or repeated candidates.
    """
    if (user_id is None) == (history is None):
        raise ConfigError("give exactly one of user_id and history")
    codes = served.items.codes(candidates)
    known = codes >= 0
    repeated_items = np.unique(codes[known]).size != int(known.sum())  # e.g. 42 and "42"
    if repeated_items or len(set(map(repr, candidates))) != len(candidates):
        raise ConfigError("candidates must be unique")
    if history is None:
        query, cold = _user_query(served, user_id, history_of)
    else:
        query = _history_query(served, history, True)
        cold = bool(query.lengths()[0] == 0)
    unknown = [c for c, ok in zip(candidates, known, strict=True) if not ok]
    known_ids = [c for c, ok in zip(candidates, known, strict=True) if ok]
    if not known_ids:
        return Answer([], [], cold, unknown)
    scores = served.model.score(query, items=codes[known])[0]
    order = np.argsort(-scores, kind="stable")
    ranked = _rank_scores(len(order)) if cold else [float(scores[i]) for i in order]
    return Answer([known_ids[i] for i in order], ranked, cold, unknown)
