"""``POST /v1/search``: catalogue search, personalised by a known user or an ad-hoc history.

Served when ``privrank serve --search-model DIR`` names a ``privrank search build`` directory
(:class:`~privrank.ranking.search.PersonalisedSearch`); otherwise the route answers 409. The
body is :class:`SearchRequest`: the query text, and at most one of ``user_id`` (a user of the
search model: their training history personalises) and ``history`` (external item ids, folded
in: a history that is sent, used for this answer and not stored). Without either the results
are anonymous (the ranker sees an empty history). Authentication, scope (``read``) and rate
limit are those of every ``/v1`` read route; ``k`` is bounded by ``read_max_k``. As for
``/v1/recommend``, a ``user_id`` needs scope ``service`` or a user token minted for that user
(403 otherwise): personalised results reveal something of the user's history.

Each stage's time (``embed``, ``retrieve``, ``features``, ``rank``) goes to the histogram
``privrank_search_stage_seconds{stage}`` of ``/metrics``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field

from privrank.errors import ConfigError
from privrank.serving.auth import Principal
from privrank.serving.errors import ConflictError, NotFoundError, PermissionDeniedError

if TYPE_CHECKING:
    from privrank.ranking.search import PersonalisedSearch

__all__ = ["SearchRequest", "add_search_routes"]

_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class SearchRequest(BaseModel):
    """A search.

    Attributes:
        query: The search text.
        user_id: A user of the search model (their history personalises).
        history: External item ids to personalise by (not stored).
        k: Results wanted.
        exclude_seen: Leave the history's items out of the results.
    """

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=512)
    user_id: int | str | None = None
    history: list[int | str] | None = Field(default=None, max_length=10_000)
    k: int = Field(default=10, ge=1)
    exclude_seen: bool = True


class _SearchState:
    def __init__(self, directory: Path | None, registry: Any) -> None:
        self.directory = directory
        self.engine: PersonalisedSearch | None = None
        self.stage_seconds = Histogram(
            "privrank_search_stage_seconds",
            "Time of each stage of /v1/search (embed, retrieve, features, rank).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        self.searches = Counter(
            "privrank_searches",
            "Searches answered, by kind (personalised or anonymous).",
            ["kind"],
            registry=registry,
        )

    def load(self) -> None:
        if self.directory is not None:
            from privrank.ranking.search import PersonalisedSearch

            self.engine = PersonalisedSearch.load(self.directory)
            self.engine.search(["warm up"], None, 1)  # loads the text encoder before serving

    def answer(self, body: SearchRequest, who: Principal, max_k: int) -> dict[str, Any]:
        engine = self.engine
        if engine is None:
            raise ConflictError(
                "no search model is served (start the server with --search-model DIR, a "
                "`privrank search build` directory)"
            )
        if body.k > max_k:
            raise ConfigError(f"k: {body.k} is above {max_k}, the most a read request may ask")
        if body.user_id is not None and body.history is not None:
            raise ConfigError("give user_id or history, not both")
        cf = engine.cf_
        histories: list[np.ndarray] | None = None
        if body.user_id is not None:
            if not who.may_ask_for(body.user_id):
                raise PermissionDeniedError(
                    "this credential may not search as this user: a user_id needs scope "
                    "'service', or a user token minted for that user (send a history instead)"
                )
            typed_user = _typed([body.user_id], cf.user_ids_)
            code = int(cf.user_codes(typed_user)[0]) if typed_user else -1
            if code < 0:
                raise NotFoundError(f"user_id {body.user_id!r} is not a user of the search model")
            indptr, codes = cf.history_indptr_, cf.history_items_
            histories = [codes[indptr[code] : indptr[code + 1]]]
        elif body.history is not None:
            known = _typed(body.history, cf.item_ids_)
            query = cf.history_query([known], ignore_unknown_items=True)
            assert query.items is not None
            histories = [query.items]
        result = engine.search([body.query], histories, body.k, exclude_seen=body.exclude_seen)
        for stage, seconds in result.timings.items():
            self.stage_seconds.labels(stage).observe(seconds)
        self.searches.labels("anonymous" if histories is None else "personalised").inc()
        items = [
            {"item_id": engine.item_ids_[c], "score": float(s)}
            for c, s in zip(result.items[0].tolist(), result.scores[0].tolist(), strict=True)
            if c >= 0
        ]
        return {
            "query": body.query,
            "personalised": histories is not None,
            "items": items,
            "timings_ms": {name: 1000 * s for name, s in result.timings.items()},
        }


def _typed(ids: list[Any], vocabulary: Any) -> list[Any]:
    """The ids that can be ids of ``vocabulary`` (an Arrow array), typed like it: integers for
    an integer vocabulary (``"7"`` becomes ``7``; ``"x"`` is dropped as unknown), strings
    otherwise."""
    import pyarrow as pa

    if not pa.types.is_integer(vocabulary.type):
        return [str(i) for i in ids]
    out = []
    for value in ids:
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            continue
    return out


def add_search_routes(app: FastAPI, reader: Any, directory: Path | None, registry: Any) -> None:
    """Register ``POST /v1/search``; ``reader`` is the app's ``read``-scope dependency and
    ``registry`` the app's Prometheus registry. The search model is loaded here, once."""
    state = _SearchState(directory, registry)
    state.load()

    @app.post("/v1/search", tags=["search"])
    async def search(request: Request, body: SearchRequest, who: Principal = reader) -> Any:
        """Search the catalogue; personalised when ``user_id`` or ``history`` is given."""
        max_k = request.app.state.serving.settings.read_max_k
        return await asyncio.to_thread(state.answer, body, who, max_k)
