"""Database URLs for privrank's transactional state (the privacy ledger, serving keys/events).

Two backends are supported: a SQLite *file* (the default; an in-memory database would lose
every write when the process ends) and PostgreSQL through psycopg 3 (a bare ``postgresql://``
URL is given the ``psycopg`` driver).
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from privrank.errors import ConfigError

__all__ = ["normalise_database_url"]


def normalise_database_url(url: str | URL, *, what: str, loses: str, example: str) -> URL:
    """Parse and check a database URL.

    Args:
        url: A SQLAlchemy URL.
        what: The store it is for, used in messages (``"ledger"``).
        loses: What an in-memory database would lose (``"every spend"``).
        example: An example SQLite file name for the message (``"ledger.sqlite"``).

    Returns:
        The parsed URL, with psycopg as the PostgreSQL driver.

    Raises:
        ConfigError: Not a URL, an in-memory SQLite database, or another database.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"invalid {what} URL {str(url)!r}: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError(
                f"the {what} needs a SQLite file (an in-memory database would lose {loses})"
            )
        return parsed
    raise ConfigError(
        f"unsupported {what} database {backend!r} in {parsed.render_as_string()!r}: use "
        f"sqlite:///path/to/{example} or postgresql://user@host/db"
    )
