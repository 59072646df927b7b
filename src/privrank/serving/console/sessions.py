"""Console sessions, kept on the server: the browser holds only a random session id.

A session is opened by signing in with an ``admin`` API key. Its id is 256 random bits
(:func:`secrets.token_urlsafe`), sent to the browser once in the session cookie; the database
keeps only its SHA-256, so a copy of the table does not hold usable cookies. Each session has its
own CSRF token (256 random bits) that every form of the console carries back, and an expiry time
set at sign-in (:attr:`SessionStore.ttl_s` later) that the server checks on every request: a
cookie replayed after it, or after sign-out, finds no session. A session also ends when the key
it was opened with is revoked (the console checks the key on every request).

Expired sessions are deleted when the next session is opened.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, delete, select
from sqlalchemy.exc import SQLAlchemyError

from privrank.serving.errors import StorageError

__all__ = ["ConsoleSession", "SessionStore", "same_token"]

metadata = MetaData()
sessions_table = Table(
    "privrank_console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("key_name", String(64), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def same_token(presented: str | None, expected: str | None) -> bool:
    """Whether two non-empty tokens are equal (constant-time comparison)."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True)
class ConsoleSession:
    """An open console session.

    Attributes:
        key_name: The name of the admin key it was opened with.
        csrf_token: The token every form of this session must send back.
        created_at: When it was opened (UTC).
        expires_at: When the server stops accepting it (UTC).
    """

    key_name: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


class SessionStore:
    """Console sessions in the serving database.

    Args:
        engine: The serving database (the table is created when missing).
        ttl_s: Seconds a session lasts from sign-in.
        now: The current UTC time (tests).
    """

    def __init__(
        self,
        engine: Engine,
        ttl_s: float,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._engine = engine
        self.ttl_s = ttl_s
        self._now = now or (lambda: datetime.now(UTC))
        self._guard(lambda: metadata.create_all(engine, checkfirst=True))

    def _guard(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except SQLAlchemyError as exc:
            detail = getattr(exc, "orig", None) or type(exc).__name__
            raise StorageError(f"the console session store is unavailable: {detail}") from exc

    def open(self, key_name: str) -> tuple[str, ConsoleSession]:
        """Open a session for the admin key ``key_name``.

        Returns:
            The session id (for the cookie; not stored) and the session.
        """
        session_id = secrets.token_urlsafe(32)
        now = self._now()
        session = ConsoleSession(
            key_name=key_name,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + timedelta(seconds=self.ttl_s),
        )

        def insert() -> None:
            with self._engine.begin() as conn:
                conn.execute(delete(sessions_table).where(sessions_table.c.expires_at <= now))
                conn.execute(
                    sessions_table.insert().values(
                        id_hash=_hash(session_id),
                        key_name=session.key_name,
                        csrf_token=session.csrf_token,
                        created_at=session.created_at,
                        expires_at=session.expires_at,
                    )
                )

        self._guard(insert)
        return session_id, session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The open, unexpired session of ``session_id``, else ``None``."""
        if not session_id or len(session_id) > 128:
            return None

        def fetch() -> Any:
            with self._engine.connect() as conn:
                query = select(sessions_table).where(sessions_table.c.id_hash == _hash(session_id))
                return conn.execute(query).first()

        row = self._guard(fetch)
        if row is None:
            return None
        expires_at = _aware(row.expires_at)
        if expires_at <= self._now():
            return None
        return ConsoleSession(
            key_name=row.key_name,
            csrf_token=row.csrf_token,
            created_at=_aware(row.created_at),
            expires_at=expires_at,
        )

    def close(self, session_id: str | None) -> None:
        """End the session of ``session_id`` (sign-out; nothing happens for an unknown id)."""
        if not session_id:
            return

        def remove() -> None:
            with self._engine.begin() as conn:
                conn.execute(
                    delete(sessions_table).where(sessions_table.c.id_hash == _hash(session_id))
                )

        self._guard(remove)
