"""Server-side secrets shared by every server process through the serving database.

Two secrets are kept, each 256 random bits generated on first use and never shown:

- ``key-pepper``: the key of the HMAC-SHA-256 under which API keys are hashed
  (:mod:`privrank.serving.auth`);
- ``token-signing``: the HMAC-SHA-256 key that signs user tokens (:mod:`privrank.serving.tokens`).

They live in the table ``privrank_server_secrets`` of the serving database, so that every
worker and every replica behind one database agree on them without a shared file system. Anyone
who can read that table can mint user tokens: guard the database as you guard the keys. Rotating
a secret (deleting its row) invalidates every API key (pepper) or every user token (signing key).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, select
from sqlalchemy.exc import IntegrityError

__all__ = ["KEY_PEPPER", "TOKEN_SIGNING", "server_secret"]

KEY_PEPPER = "key-pepper"
TOKEN_SIGNING = "token-signing"

metadata = MetaData()
server_secrets = Table(
    "privrank_server_secrets",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def server_secret(engine: Engine, name: str) -> bytes:
    """The secret called ``name``, created (256 random bits) when the database has none.

    Two processes creating it at once agree: the second insert fails on the primary key and
    reads the first one's value.
    """
    metadata.create_all(engine, checkfirst=True)
    query = select(server_secrets.c.value).where(server_secrets.c.name == name)
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    if value is None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    server_secrets.insert().values(
                        name=name, value=secrets.token_hex(32), created_at=datetime.now(UTC)
                    )
                )
        except IntegrityError:
            pass
        with engine.connect() as conn:
            value = conn.execute(query).scalar_one()
    return bytes.fromhex(value)
