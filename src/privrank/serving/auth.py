"""API keys with scopes, stored only as peppered HMAC-SHA-256 hashes and checked in constant time.

A key looks like ``prk_<id>_<secret>``: ``<id>`` (12 hex digits) finds the key's row and
``<secret>`` is 256 random bits. The whole key is hashed as HMAC-SHA-256 under a server-side
pepper (:data:`privrank.serving.secrets.KEY_PEPPER`) of the row's random salt and the key, and
compared with the stored hash by :func:`hmac.compare_digest`. A slow password hash (scrypt) buys
nothing for a 256-bit random secret and made every bad key cost ~46 ms and 16 MiB of server
work; the keyed fast hash costs microseconds, so bad keys cannot exhaust the server. Keys
created by earlier versions under scrypt still verify, and are rehashed under HMAC the first
time they do. The raw key is shown once, when it is created, and never stored.

Keys are revoked by name; a revoked key is refused at once by the process that revoked it and
within :attr:`KeyStore.cache_ttl_s` seconds (5 s by default) by every other server process.

Scopes are ordered, each including the ones before it:

- ``read``: answers that concern no particular user: recommendations for a history the caller
  sends, similar items, ranking for a history, the model list, metrics. A ``read`` credential
  may also ask for *one* user id when it is a user token minted for that user
  (:mod:`privrank.serving.tokens`).
- ``service``: also answers for *any* user id (a backend that personalises on behalf of users).
- ``write``: also ingest events and mint user tokens.
- ``admin``: also activate and roll back model versions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from privrank.errors import ConfigError, PrivrankError
from privrank.serving.errors import NotFoundError, StorageError
from privrank.serving.secrets import KEY_PEPPER, server_secret

__all__ = ["ApiKey", "CreatedKey", "KeyStore", "Principal", "Scope", "hash_key"]

_PREFIX = "prk"
_KEY_PATTERN = re.compile(r"^prk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DKLEN = 32
_ALGORITHM = "hmac-sha256"

metadata = MetaData()
api_keys = Table(
    "privrank_api_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("key_id", String(12), nullable=False, unique=True),
    Column("scope", String(8), nullable=False),
    Column("algorithm", String(64), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("key_hash", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


class Scope(StrEnum):
    """What a credential may do; each scope includes the ones before it."""

    READ = "read"
    SERVICE = "service"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def level(self) -> int:
        """Position in the order read < service < write < admin."""
        return _LEVELS[self]

    def grants(self, required: Scope) -> bool:
        """Whether a credential of this scope may do what ``required`` guards."""
        return _LEVELS[self] >= _LEVELS[Scope(required)]


_LEVELS = {scope: position for position, scope in enumerate(Scope)}


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret.

    Attributes:
        name: Unique name (what ``privrank keys revoke`` takes).
        key_id: The public part of the key, shown in listings.
        scope: What the key may do.
        created_at: When it was created (UTC).
        revoked_at: When it was revoked, or ``None``.
    """

    name: str
    key_id: str
    scope: Scope
    created_at: datetime | None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Whether the key is still accepted."""
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who is asking: an API key, or a user token minted by one.

    Attributes:
        name: What logs and metrics may show: the key's name, or ``token:<minting key>`` for a
            user token (never the user id).
        scope: What the credential may do.
        user_id: The one user a user token may ask about; ``None`` for an API key.
        bucket: The rate-limit bucket (one per key, one per token subject).
    """

    name: str
    scope: Scope
    user_id: Any = None
    bucket: str = ""

    @classmethod
    def of_key(cls, key: ApiKey) -> Principal:
        """The principal of an API key."""
        return cls(name=key.name, scope=key.scope, user_id=None, bucket=f"key:{key.name}")

    def may_ask_for(self, user_id: Any) -> bool:
        """Whether this principal may ask about ``user_id``: a ``service`` (or higher) key
        about anyone, a user token only about its own user (same type and value)."""
        if self.scope.grants(Scope.SERVICE):
            return True
        return (
            self.user_id is not None
            and type(self.user_id) is type(user_id)
            and self.user_id == user_id
        )


@dataclass(frozen=True)
class CreatedKey:
    """A newly created key: the only time the raw key exists outside the caller's hands.

    Attributes:
        key: The stored record.
        secret: The raw key to give to the client (``prk_<id>_<secret>``).
    """

    key: ApiKey
    secret: str


def hash_key(raw_key: str, salt: bytes, pepper: bytes) -> bytes:
    """HMAC-SHA-256 under ``pepper`` of ``salt`` followed by the raw key (32 bytes)."""
    return hmac.new(pepper, salt + raw_key.encode("utf-8"), hashlib.sha256).digest()


def _legacy_scrypt(raw_key: str, salt: bytes, algorithm: str) -> bytes:
    """The scrypt hash of keys created before HMAC hashing (``scrypt$N$r$p``)."""
    name, n, r, p = algorithm.split("$")
    if name != "scrypt":
        raise ConfigError(f"unsupported key hash algorithm {name!r}")
    return hashlib.scrypt(
        raw_key.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=_DKLEN
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row_to_key(row: Any) -> ApiKey:
    return ApiKey(
        name=row.name,
        key_id=row.key_id,
        scope=Scope(row.scope),
        created_at=_aware(row.created_at),
        revoked_at=_aware(row.revoked_at),
    )


class KeyStore:
    """API keys in the serving database.

    Args:
        engine: A SQLAlchemy engine (see :func:`privrank.serving.db.make_engine`); the tables
            are created when missing.
        cache_ttl_s: How long a verified key is trusted without asking the database again (how
            long a key revoked by another process may still work here).
    """

    def __init__(self, engine: Engine, *, cache_ttl_s: float = 5.0) -> None:
        self._engine = engine
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[bytes, tuple[ApiKey, float]] = {}
        self._cache_secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._dummy_salt = secrets.token_bytes(16)
        self._guard(lambda: metadata.create_all(self._engine, checkfirst=True))
        self._pepper: bytes = self._guard(lambda: server_secret(self._engine, KEY_PEPPER))

    @property
    def engine(self) -> Engine:
        """The serving database."""
        return self._engine

    def _guard(self, action):
        try:
            return action()
        except PrivrankError:
            raise
        except SQLAlchemyError as exc:
            detail = getattr(exc, "orig", None) or type(exc).__name__
            raise StorageError(f"the API key store is unavailable: {detail}") from exc

    # ---------------------------------------------------------------- management
    def create(self, scope: Scope | str, name: str | None = None) -> CreatedKey:
        """Create a key; the raw key is returned once and never stored.

        Raises:
            ConfigError: An invalid scope or name, or a name already taken (revoked keys keep
                their names).
        """
        try:
            scope = Scope(scope)
        except ValueError:
            raise ConfigError(
                f"scope must be one of {[s.value for s in Scope]}. Got {scope!r}"
            ) from None
        key_id = secrets.token_hex(6)
        name = f"key-{key_id}" if name is None else name
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise ConfigError(
                "a key name must be 1-64 letters, digits, '_', '.' or '-' starting with a letter "
                f"or digit. Got {name!r}"
            )
        raw = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        salt = secrets.token_bytes(16)
        record = ApiKey(name=name, key_id=key_id, scope=scope, created_at=datetime.now(UTC))

        def insert() -> None:
            with self._engine.begin() as conn:
                conn.execute(
                    api_keys.insert().values(
                        name=name,
                        key_id=key_id,
                        scope=scope.value,
                        algorithm=_ALGORITHM,
                        salt=salt.hex(),
                        key_hash=hash_key(raw, salt, self._pepper).hex(),
                        created_at=record.created_at,
                    )
                )

        try:
            self._guard(insert)
        except PrivrankError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise ConfigError(f"an API key named {name!r} already exists") from None
            raise
        return CreatedKey(key=record, secret=raw)

    def revoke(self, name: str) -> ApiKey:
        """Revoke the key called ``name`` (idempotent). User tokens it minted stop working
        with it.

        Raises:
            NotFoundError: No key has that name.
        """

        def run():
            with self._engine.begin() as conn:
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=datetime.now(UTC))
                )
                return conn.execute(select(api_keys).where(api_keys.c.name == name)).first()

        row = self._guard(run)
        if row is None:
            raise NotFoundError(f"no API key is named {name!r}")
        with self._lock:
            self._cache = {h: v for h, v in self._cache.items() if v[0].name != name}
        return _row_to_key(row)

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""

        def run():
            with self._engine.connect() as conn:
                query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.name)
                return conn.execute(query).all()

        return [_row_to_key(row) for row in self._guard(run)]

    def count_active(self) -> int:
        """How many keys are not revoked."""
        return sum(1 for key in self.list() if key.active)

    def active_key(self, name: str) -> ApiKey | None:
        """The key called ``name`` when it exists and is not revoked (cached like
        :meth:`verify`), else ``None``; user tokens are checked against their minting key."""
        token = b"name:" + name.encode("utf-8")
        now = time.monotonic()
        cached = self._cached_at(token, now)
        if cached is not None:
            return cached

        def fetch():
            with self._engine.connect() as conn:
                return conn.execute(select(api_keys).where(api_keys.c.name == name)).first()

        row = self._guard(fetch)
        if row is None or row.revoked_at is not None:
            return None
        return self._remember(token, _row_to_key(row), now)

    # ---------------------------------------------------------------- verification
    def _token(self, raw_key: str) -> bytes:
        return hmac.new(self._cache_secret, raw_key.encode("utf-8"), hashlib.sha256).digest()

    def _cached_at(self, token: bytes, now: float) -> ApiKey | None:
        """The key cached under ``token`` unless its entry has expired by ``now``."""
        with self._lock:
            cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        return None

    def _remember(self, token: bytes, key: ApiKey, now: float) -> ApiKey:
        """Cache ``key`` under ``token`` for :attr:`cache_ttl_s` from ``now``; return it."""
        with self._lock:
            self._cache[token] = (key, now + self.cache_ttl_s)
        return key

    def fingerprint(self, raw_credential: str) -> bytes:
        """A keyed digest of ``raw_credential`` (HMAC-SHA256 under this process's cache secret),
        to index it in memory without keeping the secret itself."""
        return self._token(raw_credential)

    def cached(self, raw_key: str) -> ApiKey | None:
        """The key for ``raw_key`` when it was verified less than :attr:`cache_ttl_s` ago
        (no database), else ``None``; then call :meth:`verify`."""
        return self._cached_at(self._token(raw_key), time.monotonic())

    def verify(self, raw_key: str) -> ApiKey | None:
        """The active key whose secret is ``raw_key``, or ``None``.

        One database read by the key's public id and one HMAC; the comparison is constant-time
        (:func:`hmac.compare_digest`), and a malformed key or an unknown id costs one HMAC too,
        so timing does not tell them apart. A key stored under the legacy scrypt hash is
        verified with it once and then rehashed under HMAC.
        """
        token = self._token(raw_key)
        now = time.monotonic()
        cached = self._cached_at(token, now)
        if cached is not None:
            return cached
        match = _KEY_PATTERN.match(raw_key)
        row = None
        if match:

            def fetch():
                with self._engine.connect() as conn:
                    query = select(api_keys).where(api_keys.c.key_id == match.group(1))
                    return conn.execute(query).first()

            row = self._guard(fetch)
        if row is None:
            hmac.compare_digest(hash_key(raw_key, self._dummy_salt, self._pepper), bytes(_DKLEN))
            return None
        salt = bytes.fromhex(row.salt)
        if row.algorithm == _ALGORITHM:
            actual = hash_key(raw_key, salt, self._pepper)
        else:
            actual = _legacy_scrypt(raw_key, salt, row.algorithm)
        if not hmac.compare_digest(actual, bytes.fromhex(row.key_hash)):
            return None
        if row.revoked_at is not None:
            return None
        if row.algorithm != _ALGORITHM:
            self._rehash(row.name, raw_key)
        return self._remember(token, _row_to_key(row), now)

    def _rehash(self, name: str, raw_key: str) -> None:
        salt = secrets.token_bytes(16)

        def run() -> None:
            with self._engine.begin() as conn:
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.name == name)
                    .values(
                        algorithm=_ALGORITHM,
                        salt=salt.hex(),
                        key_hash=hash_key(raw_key, salt, self._pepper).hex(),
                    )
                )

        self._guard(run)
