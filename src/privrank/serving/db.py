"""Database engines for the serving state (API keys and events): SQLite or PostgreSQL.

SQLite (the default) runs in WAL mode with ``synchronous=FULL``: a transaction is on disk when its
commit returns, so an acknowledged write survives a crash or power loss, and several server
processes can read while one writes. PostgreSQL URLs use psycopg 3.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL

from privrank.database import normalise_database_url
from privrank.errors import ConfigError
from privrank.settings import home_dir

__all__ = ["DATABASE_URL_ENV", "default_database_url", "make_engine", "normalise_url"]

DATABASE_URL_ENV = "PRIVRANK_SERVE_DATABASE_URL"
_SQLITE_BUSY_TIMEOUT_S = 30.0


def default_database_url() -> str:
    """``$PRIVRANK_SERVE_DATABASE_URL``, else ``sqlite:///$PRIVRANK_HOME/serving.sqlite``."""
    value = os.environ.get(DATABASE_URL_ENV)
    if value:
        return value
    return f"sqlite:///{home_dir() / 'serving.sqlite'}"


def normalise_url(url: str | URL) -> URL:
    """Parse and check a serving database URL (SQLite file or PostgreSQL; ConfigError else)."""
    return normalise_database_url(
        url, what="serving database", loses="every key and event", example="serving.sqlite"
    )


def make_engine(url: str | URL) -> Engine:
    """A SQLAlchemy engine for ``url`` (SQLite: WAL, ``synchronous=FULL``, busy timeout)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database is None:  # normalise_url refuses an in-memory database
        raise ConfigError("the serving database needs a SQLite file")
    Path(parsed.database).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        previous = dbapi_connection.isolation_level
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()
        dbapi_connection.isolation_level = previous

    return engine
