"""Console sessions: kept on the server, expiring there, stored only as hashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from privrank.serving import make_engine
from privrank.serving.console.sessions import SessionStore, same_token


def test_sessions_expire_on_the_server_and_end_at_sign_out(tmp_path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    engine = make_engine(f"sqlite:///{tmp_path / 'serving.sqlite'}")
    store = SessionStore(engine, ttl_s=60, now=lambda: now[0])
    first, session = store.open("admin-key")
    second, other = store.open("admin-key")
    assert first != second and session.csrf_token != other.csrf_token
    assert len(first) >= 43 and len(session.csrf_token) >= 43  # 256 random bits each
    assert store.get(first) == session
    assert session.expires_at - session.created_at == timedelta(seconds=60)
    now[0] += timedelta(seconds=59)
    assert store.get(first) is not None
    now[0] += timedelta(seconds=1)
    assert store.get(first) is None  # expired: the cookie alone is worth nothing
    assert store.get(None) is None and store.get("") is None and store.get("x" * 500) is None
    third, _ = store.open("admin-key")  # purges the expired ones
    store.close(third)
    assert store.get(third) is None
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM privrank_console_sessions").all()
    assert rows == []
    fourth, _ = store.open("admin-key")
    dump = b"".join(path.read_bytes() for path in tmp_path.glob("serving.sqlite*"))
    assert fourth.encode() not in dump  # only the SHA-256 of a session id is stored
    engine.dispose()


def test_tokens_are_compared_whole() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd") and not same_token("ab", "abc")
    assert not same_token(None, "abc") and not same_token("", "") and not same_token("a", None)
