"""The event store: interaction events persisted through SQLAlchemy, idempotent by event id.

Events go to SQLite (default; WAL mode, ``synchronous=FULL``) or PostgreSQL. Each event carries a
client-chosen ``event_id`` under a unique constraint: sending an event again (a retry after a
lost answer) stores nothing new and is reported as a duplicate. :meth:`EventStore.ingest` returns
only after the transaction committed, so an acknowledged event survives a crash of the server.

**Plausible timestamps.** An event's time must lie in a window: not before
:data:`EARLIEST_EVENT_TIME` (1970-01-01T00:00:00Z, the Unix epoch) and not more than
:data:`MAX_EVENT_CLOCK_SKEW` (1 day) after the server's clock when it is checked, both edges
included. Anything else is a client error (``DataError`` here, 422 naming the field over HTTP):
a year-1 or year-9999 time is a bug or a probe, and an offset such as ``-05:00`` on
9999-12-31T23:00 would not even have a UTC value. The day of slack absorbs skewed client clocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from privrank.errors import DataError
from privrank.serving.errors import StorageError

__all__ = [
    "EARLIEST_EVENT_TIME",
    "MAX_EVENT_CLOCK_SKEW",
    "Event",
    "EventStore",
    "IngestResult",
    "event_time_problem",
]

EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest event time accepted (the Unix epoch)."""
MAX_EVENT_CLOCK_SKEW = timedelta(days=1)
"""How far past the server's clock an event time may lie (client clocks run fast)."""


def event_time_problem(value: datetime, now: datetime) -> str | None:
    """What is wrong with an event time, or ``None`` when it is plausible.

    Plausible: timezone-aware and within ``[EARLIEST_EVENT_TIME, now + MAX_EVENT_CLOCK_SKEW]``.
    The comparisons work for any aware datetime, even one whose UTC value is out of range.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        return "must carry a timezone (e.g. 2026-01-31T12:00:00Z)"
    latest = now + MAX_EVENT_CLOCK_SKEW
    if not EARLIEST_EVENT_TIME <= value <= latest:
        return (
            f"must lie between {EARLIEST_EVENT_TIME.isoformat()} and "
            f"{MAX_EVENT_CLOCK_SKEW.days} day after the server's clock "
            f"({latest.isoformat(timespec='seconds')})"
        )
    return None


metadata = MetaData()
events = Table(
    "privrank_events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("user_id", String(256), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("value", Float, nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_privrank_events_received_at", "received_at"),
)


@dataclass(frozen=True)
class Event:
    """One interaction.

    Attributes:
        event_id: Client-chosen unique id (the idempotency key).
        user_id: Who interacted (stored as text).
        item_id: With what (stored as text).
        event_type: ``click``, ``view``, ``purchase``, ``rating``, ...
        occurred_at: When it happened (timezone-aware).
        value: An optional number (a rating, a watch time).
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    occurred_at: datetime
    value: float | None = None


@dataclass(frozen=True)
class IngestResult:
    """What :meth:`EventStore.ingest` did.

    Attributes:
        accepted: Events stored now.
        duplicates: Events whose id was already stored (nothing written for them).
    """

    accepted: int
    duplicates: int


def _check(event: Event, position: int, now: datetime) -> None:
    def bad(field: str, value: object, expected: str) -> DataError:
        return DataError(
            f"event {position}: invalid {field}", field=field, value=value, expected=expected
        )

    for name in ("event_id", "user_id", "item_id", "event_type"):
        value = getattr(event, name)
        if not isinstance(value, str) or not value:
            raise bad(name, value, "a non-empty string")
    if len(event.event_id) > 128:
        raise bad("event_id", len(event.event_id), "at most 128 characters")
    for name in ("user_id", "item_id"):
        if len(getattr(event, name)) > 256:
            raise bad(name, "(too long)", "at most 256 characters")
    if len(event.event_type) > 32:
        raise bad("event_type", event.event_type, "at most 32 characters")
    if event.value is not None and not math.isfinite(event.value):
        raise bad("value", event.value, "a finite number")
    if not isinstance(event.occurred_at, datetime) or event.occurred_at.tzinfo is None:
        raise bad("occurred_at", event.occurred_at, "a timezone-aware datetime")
    problem = event_time_problem(event.occurred_at, now)
    if problem is not None:
        raise bad("occurred_at", event.occurred_at, f"a time that {problem}")


class EventStore:
    """Interaction events in the serving database.

    Args:
        engine: A SQLAlchemy engine (see :func:`privrank.serving.db.make_engine`); the table is
            created when missing.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._guard(lambda: metadata.create_all(engine, checkfirst=True))

    def _guard(self, action):
        try:
            return action()
        except SQLAlchemyError as exc:
            where = self._engine.url.render_as_string(hide_password=True)
            detail = getattr(exc, "orig", None) or type(exc).__name__
            raise StorageError(f"event store {where}: {detail}") from exc

    def ingest(self, batch: Sequence[Event]) -> IngestResult:
        """Store ``batch`` in one transaction; return after it committed.

        Events whose ``event_id`` is already stored, or repeated within the batch, are skipped
        and counted as duplicates: the first write of an id wins, even if a later event with
        that id differs (an idempotency key names one event forever).

        Raises:
            DataError: An invalid event, such as one whose time is outside the plausible window
                (see the module docstring); nothing of the batch is stored.
        """
        received = datetime.now(UTC)
        for position, event in enumerate(batch):
            _check(event, position, received)
        rows, seen = [], set()
        for event in batch:
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
            rows.append(
                {
                    "event_id": event.event_id,
                    "user_id": event.user_id,
                    "item_id": event.item_id,
                    "event_type": event.event_type,
                    "value": event.value,
                    "occurred_at": event.occurred_at.astimezone(UTC),
                    "received_at": received,
                }
            )
        if not rows:
            return IngestResult(accepted=0, duplicates=len(batch))
        insert = (postgresql if self._dialect == "postgresql" else sqlite).insert(events)
        statement = (
            insert.values(rows)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(events.c.event_id)
        )

        def run() -> int:
            # RETURNING lists exactly the rows inserted (conflicting ones are skipped).
            with self._engine.begin() as conn:
                return len(conn.execute(statement).all())

        accepted = self._guard(run)
        return IngestResult(accepted=accepted, duplicates=len(batch) - accepted)

    def count(self) -> int:
        """How many events are stored."""

        def run() -> int:
            with self._engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(events)).scalar_one()

        return self._guard(run)

    def get(self, event_ids: Sequence[str]) -> list[Event]:
        """The stored events among ``event_ids`` (in no particular order)."""

        def run():
            with self._engine.connect() as conn:
                query = select(events).where(events.c.event_id.in_(list(event_ids)))
                return conn.execute(query).all()

        return [
            Event(
                event_id=r.event_id,
                user_id=r.user_id,
                item_id=r.item_id,
                event_type=r.event_type,
                occurred_at=r.occurred_at
                if r.occurred_at.tzinfo
                else r.occurred_at.replace(tzinfo=UTC),
                value=r.value,
            )
            for r in self._guard(run)
        ]

    def ping(self) -> None:
        """Check that the database answers (raises :class:`StorageError` if not)."""

        def run() -> None:
            with self._engine.connect() as conn:
                conn.execute(select(1))

        self._guard(run)
