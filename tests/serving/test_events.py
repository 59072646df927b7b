"""The event store: validated, idempotent by event id, durable once acknowledged; SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from privrank.errors import DataError
from privrank.serving import Event, EventStore, make_engine, schemas
from privrank.serving.events import EARLIEST_EVENT_TIME, MAX_EVENT_CLOCK_SKEW

from ._util import auth


def event(event_id: str, user: str = "u1", item: str = "100", **kw) -> Event:
    kw.setdefault("occurred_at", datetime(2026, 1, 1, tzinfo=UTC))
    return Event(event_id=event_id, user_id=user, item_id=item, event_type="click", **kw)


def check_store(url: str) -> None:
    engine = make_engine(url)
    store = EventStore(engine)
    prefix = uuid.uuid4().hex[:8]
    first = store.ingest([event(f"{prefix}-1"), event(f"{prefix}-2", value=4.5)])
    assert (first.accepted, first.duplicates) == (2, 0)
    again = store.ingest([event(f"{prefix}-2"), event(f"{prefix}-3"), event(f"{prefix}-3")])
    assert (again.accepted, again.duplicates) == (1, 2)
    stored = {e.event_id: e for e in store.get([f"{prefix}-{i}" for i in (1, 2, 3, 4)])}
    assert sorted(stored) == [f"{prefix}-1", f"{prefix}-2", f"{prefix}-3"]
    assert stored[f"{prefix}-2"].value == 4.5  # the first write wins
    assert stored[f"{prefix}-1"].occurred_at == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(DataError, match="value"):
        store.ingest([event(f"{prefix}-5"), event(f"{prefix}-6", value=float("nan"))])
    assert store.get([f"{prefix}-5"]) == []  # nothing of an invalid batch is stored
    store.ping()
    engine.dispose()


def test_sqlite_event_store(tmp_path) -> None:
    check_store(f"sqlite:///{tmp_path / 'events.sqlite'}")


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'e.sqlite'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    engine.dispose()


def test_naive_timestamps_are_refused(tmp_path) -> None:
    store = EventStore(make_engine(f"sqlite:///{tmp_path / 'e.sqlite'}"))
    with pytest.raises(DataError, match="occurred_at"):
        store.ingest([event("a", occurred_at=datetime(2026, 1, 1))])


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),  # no UTC value
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # no UTC value
        EARLIEST_EVENT_TIME - timedelta(microseconds=1),
        datetime.now(UTC) + MAX_EVENT_CLOCK_SKEW + timedelta(days=30),  # collected before it runs
    ],
)
def test_implausible_timestamps_are_refused_by_the_store(tmp_path, when: datetime) -> None:
    store = EventStore(make_engine(f"sqlite:///{tmp_path / 'e.sqlite'}"))
    with pytest.raises(DataError, match="occurred_at") as info:
        store.ingest([event("ok"), event("bad", occurred_at=when)])
    assert "1970-01-01" in str(info.value)
    assert store.count() == 0


@pytest.mark.postgres
def test_postgresql_event_store() -> None:
    url = os.environ.get("PRIVRANK_TEST_POSTGRES_URL")
    if not url:
        pytest.skip('PRIVRANK_TEST_POSTGRES_URL is not set (eval "$(.ci/postgres.sh)")')
    check_store(url)


# ------------------------------------------------------------------ through the API
def test_ingest_endpoint_is_idempotent_and_durable(client, keys, database_url) -> None:
    body = {
        "events": [
            {
                "event_id": "evt-1",
                "user_id": "u1",
                "item_id": 100,
                "event_type": "purchase",
                "value": 19.5,
                "timestamp": "2026-03-01T10:00:00+01:00",
            },
            {
                "event_id": "evt-2",
                "user_id": 7,
                "item_id": "x",
                "timestamp": "2026-03-01T10:00:00Z",
            },
        ]
    }
    headers = auth(keys["write"])
    first = client.post("/v1/events", json=body, headers=headers)
    assert first.status_code == 200 and first.json() == {"accepted": 2, "duplicates": 0}
    # Acknowledged means committed: another connection sees the rows at once.
    engine = make_engine(database_url)
    stored = {e.event_id: e for e in EventStore(engine).get(["evt-1", "evt-2"])}
    engine.dispose()
    assert stored["evt-1"].occurred_at == datetime(2026, 3, 1, 9, tzinfo=UTC)
    assert stored["evt-1"].event_type == "purchase" and stored["evt-1"].item_id == "100"
    assert stored["evt-2"].user_id == "7" and stored["evt-2"].event_type == "interaction"
    retry = client.post("/v1/events", json=body, headers=headers)
    assert retry.json() == {"accepted": 0, "duplicates": 2}


def test_ingest_limits_the_batch(client, keys) -> None:
    one = {"event_id": "e", "user_id": 1, "item_id": 1, "timestamp": "2026-01-01T00:00:00Z"}
    headers = auth(keys["write"])
    assert client.post("/v1/events", json={"events": []}, headers=headers).status_code == 422
    many = {"events": [{**one, "event_id": f"e{i}"} for i in range(1001)]}
    response = client.post("/v1/events", json=many, headers=headers)
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "events"


def _post_times(client, key: str, stamps: list[str]):
    body = {
        "events": [
            {"event_id": f"t{i}", "user_id": 1, "item_id": 1, "timestamp": stamp}
            for i, stamp in enumerate(stamps)
        ]
    }
    return client.post("/v1/events", json=body, headers=auth(key))


@pytest.mark.parametrize(
    "stamp",
    [
        "9999-12-31T23:00:00-05:00",  # the UTC conversion overflowed: it was a 500
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "2026-01-01T00:00:00",  # naive
    ],
)
def test_implausible_timestamps_are_a_422_naming_the_field(client, keys, stamp: str) -> None:
    response = _post_times(client, keys["write"], ["2026-01-01T00:00:00Z", stamp])
    assert response.status_code == 422, response.text
    body = response.json()
    assert [f["field"] for f in body["fields"]] == ["events.1.timestamp"]
    assert body["error"] == "validation_error"


def test_the_timestamp_window_includes_both_edges(client, keys, monkeypatch) -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    monkeypatch.setattr(schemas, "_utc_now", lambda: now)
    tick = timedelta(microseconds=1)
    latest = now + MAX_EVENT_CLOCK_SKEW
    inside = [EARLIEST_EVENT_TIME, latest, EARLIEST_EVENT_TIME + tick, latest - tick]
    response = _post_times(client, keys["write"], [t.isoformat() for t in inside])
    assert response.json() == {"accepted": 4, "duplicates": 0}
    for outside in (EARLIEST_EVENT_TIME - tick, latest + tick):
        response = _post_times(client, keys["write"], [outside.isoformat()])
        assert response.status_code == 422
        assert response.json()["fields"][0]["field"] == "events.0.timestamp"
    # The same instant written with a far offset is inside too.
    east = EARLIEST_EVENT_TIME.astimezone(timezone(timedelta(hours=23, minutes=59)))
    assert _post_times(client, keys["write"], [east.isoformat()]).status_code == 200
