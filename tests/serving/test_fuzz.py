"""Fuzz every operation of the OpenAPI schema with schemathesis, and event timestamps at the
edges of the representable range with hypothesis: no request gets a 5xx."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privrank.serving import schemas
from privrank.serving.events import EARLIEST_EVENT_TIME, MAX_EVENT_CLOCK_SKEW

from ._util import auth

# More with PRIVRANK_FUZZ_EXAMPLES=500 (the default keeps `make test` quick).
EXAMPLES_PER_OPERATION = int(os.environ.get("PRIVRANK_FUZZ_EXAMPLES", "10"))


def test_no_request_gets_a_server_error(make_client, model_dir, keys) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    client = make_client(model_dir=model_dir, rate_limit=0)
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    headers = auth(keys["admin"])
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:200]}")
            assert response.status_code < 500

        with contextlib.suppress(AssertionError):  # recorded above; fuzz the other operations
            fuzz()
    assert failures == []
    # The fuzzer got past validation too, not only 4xx answers.
    assert statuses[200] > 0 and statuses[422] > 0, statuses


# --- event timestamps ----------------------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)  # the server's clock in the timestamp fuzz
TICK = timedelta(microseconds=1)
LATEST = NOW + MAX_EVENT_CLOCK_SKEW
EXTREME = timedelta(hours=23, minutes=59)  # the largest offset ISO 8601 and datetime allow

offsets = st.one_of(
    st.sampled_from([-EXTREME, EXTREME, timedelta(0)]),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timedelta(minutes=m)),
)
maybe_offsets = st.one_of(st.none(), offsets)  # None: a naive timestamp
# Wall times at the edges of what datetime can represent (most have no UTC value at some offset).
range_edges = st.sampled_from(
    [datetime.min, datetime.min + TICK, datetime.max, datetime.max - TICK, datetime(9999, 12, 31)]
)
# Instants (naive UTC) at the edges of the plausible window, one microsecond either side.
window_edges = st.sampled_from(
    [
        edge.replace(tzinfo=None) + step
        for edge in (EARLIEST_EVENT_TIME, LATEST)
        for step in (-TICK, timedelta(0), TICK)
    ]
)
stamps = st.one_of(
    st.tuples(range_edges, maybe_offsets),
    # The window's edge instants written at any offset (wall time = UTC + offset), or naive.
    st.tuples(window_edges, offsets).map(lambda p: (p[0] + p[1], p[1])),
    st.tuples(window_edges, st.none()),
    st.tuples(st.datetimes(), maybe_offsets),
    st.tuples(st.datetimes(datetime(1969, 12, 30), datetime(2026, 6, 3)), maybe_offsets),
)


def _written(wall: datetime, offset: timedelta | None, zulu: bool) -> str:
    """ISO 8601 as a client writes it: naive without an offset, ``Z`` for UTC if ``zulu``."""
    if offset is None:
        return wall.isoformat()
    text = wall.replace(tzinfo=timezone(offset)).isoformat()
    return text.removesuffix("+00:00") + "Z" if zulu and not offset else text


def _plausible(wall: datetime, offset: timedelta | None) -> bool:
    """The window, computed apart from the server's code: UTC = wall time − offset, as timedeltas
    since datetime.min (which cannot overflow at the edges of the range)."""
    if offset is None:
        return False
    since_min = (wall - datetime.min) - offset
    earliest = EARLIEST_EVENT_TIME.replace(tzinfo=None) - datetime.min
    latest = LATEST.replace(tzinfo=None) - datetime.min
    return earliest <= since_min <= latest


@pytest.fixture
def events_client(make_client, model_dir, keys, monkeypatch):
    """A client without rate limit whose schema validation sees the clock at :data:`NOW`."""
    monkeypatch.setattr(schemas, "_utc_now", lambda: NOW)
    return make_client(model_dir=model_dir, rate_limit=0)


@settings(
    max_examples=EXAMPLES_PER_OPERATION * 20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(st.tuples(stamps, st.booleans()), min_size=1, max_size=4))
def test_event_timestamps_at_the_edges_are_200_or_a_422_naming_them(
    events_client, keys, batch
) -> None:
    prefix = uuid.uuid4().hex[:12]
    events = [
        {"event_id": f"{prefix}-{i}", "user_id": 1, "item_id": 1, "timestamp": _written(w, o, z)}
        for i, ((w, o), z) in enumerate(batch)
    ]
    body = {"events": events}
    response = events_client.post("/v1/events", json=body, headers=auth(keys["write"]))
    assert response.status_code in (200, 422), (body, response.text)
    bad = [f"events.{i}.timestamp" for i, ((w, o), _) in enumerate(batch) if not _plausible(w, o)]
    if bad:
        assert response.status_code == 422, (body, response.text)
        assert [f["field"] for f in response.json()["fields"]] == bad, (body, response.text)
    else:
        assert response.status_code == 200, (body, response.text)
        assert response.json() == {"accepted": len(batch), "duplicates": 0}
