"""Users' histories as the serving database knows them: the events ingested through
``POST /v1/events``, never a model's training data.

A private model is served from its release artifact, which holds no user ids and no histories
(its differential privacy guarantee covers nothing else), so a request naming a user id is
answered from the events this server received for that user: they are folded in to personalise
and left out of the answer when ``exclude_seen`` asks. A non-private model's own training
histories are used for the users it was trained on (see the README's "Security model" for what
that reveals to a ``service`` key).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Index, select
from sqlalchemy.exc import SQLAlchemyError

from privrank.serving.errors import StorageError
from privrank.serving.events import events

__all__ = ["EventHistories"]

_BY_USER = Index("ix_privrank_events_user_time", events.c.user_id, events.c.occurred_at)


class EventHistories:
    """Per-user item sequences read from the event store's table.

    Args:
        engine: The serving database.
        limit: Most recent events read per user (older ones are left out).
    """

    def __init__(self, engine: Engine, limit: int = 10_000) -> None:
        self._engine = engine
        self.limit = limit
        try:
            events.create(engine, checkfirst=True)
            _BY_USER.create(engine, checkfirst=True)
        except SQLAlchemyError as exc:
            raise StorageError(f"the event store is unavailable: {type(exc).__name__}") from exc

    def items_of(self, user_id: Any) -> list[str]:
        """The item ids of ``user_id``'s events, oldest first (the newest :attr:`limit`)."""
        query = (
            select(events.c.item_id)
            .where(events.c.user_id == str(user_id))
            .order_by(events.c.occurred_at.desc(), events.c.event_id.desc())
            .limit(self.limit)
        )
        try:
            with self._engine.connect() as conn:
                items = conn.execute(query).scalars().all()
        except SQLAlchemyError as exc:
            raise StorageError(f"the event store is unavailable: {type(exc).__name__}") from exc
        return list(reversed(items))
