"""API keys with scopes, stored only as salted scrypt hashes and checked in constant time.

A key looks like ``prk_<id>_<secret>``: ``<id>`` (12 hex digits) finds the key's row, the whole
key is hashed with :func:`hashlib.scrypt` under the row's random salt and compared with the stored
hash by :func:`hmac.compare_digest`. The raw key is shown once, when it is created, and never
stored. Keys are revoked by name; a revoked key is refused at once by the process that revoked it
and within :attr:`KeyStore.cache_ttl_s` seconds by every other server process.

Scopes are ordered: ``read`` (recommend, rank, similar items, list models, metrics) ⊂ ``write``
(also ingest events) ⊂ ``admin`` (also activate and roll back model versions).
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

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from privrank.errors import ConfigError, PrivrankError
from privrank.serving.errors import NotFoundError, StorageError

__all__ = ["ApiKey", "CreatedKey", "KeyStore", "Scope", "hash_key"]

_PREFIX = "prk"
_KEY_PATTERN = re.compile(r"^prk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# scrypt cost: 2**14 x 8 x 1 is ~16 MiB and tens of milliseconds per check (OWASP's minimum);
# verified keys are cached in memory, keyed by an HMAC under a per-process secret.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _DKLEN = 2**14, 8, 1, 32
_ALGORITHM = f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}"

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
    """What a key may do; each scope includes the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def level(self) -> int:
        """Position in the order read < write < admin."""
        return list(Scope).index(self)

    def grants(self, required: Scope) -> bool:
        """Whether a key of this scope may do what ``required`` guards."""
        return self.level >= Scope(required).level


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
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Whether the key is still accepted."""
        return self.revoked_at is None


@dataclass(frozen=True)
class CreatedKey:
    """A newly created key: the only time the raw key exists outside the caller's hands.

    Attributes:
        key: The stored record.
        secret: The raw key to give to the client (``prk_<id>_<secret>``).
    """

    key: ApiKey
    secret: str


def hash_key(raw_key: str, salt: bytes, algorithm: str = _ALGORITHM) -> bytes:
    """The salted scrypt hash of a raw key under ``algorithm`` (``scrypt$N$r$p``)."""
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


def _row_to_key(row) -> ApiKey:
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
        engine: A SQLAlchemy engine (see :func:`privrank.serving.db.make_engine`); the table is
            created when missing.
        cache_ttl_s: How long a verified key is trusted without asking the database again.
    """

    def __init__(self, engine: Engine, *, cache_ttl_s: float = 5.0) -> None:
        self._engine = engine
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[bytes, tuple[ApiKey, float]] = {}
        # Keys this process has verified with scrypt: token -> the stored hash they matched.
        self._verified: dict[bytes, str] = {}
        self._gates = [threading.Lock() for _ in range(64)]  # striped by token: bounded
        self._cache_secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._dummy_salt = secrets.token_bytes(16)
        self._guard(lambda: metadata.create_all(self._engine, checkfirst=True))

    def _guard(self, action):
        try:
            return action()
        except PrivrankError:
            raise
        except SQLAlchemyError as exc:
            where = self._engine.url.render_as_string(hide_password=True)
            detail = getattr(exc, "orig", None) or type(exc).__name__
            raise StorageError(f"API key store {where}: {detail}") from exc

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
                        key_hash=hash_key(raw, salt).hex(),
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
        """Revoke the key called ``name`` (idempotent).

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

    # ---------------------------------------------------------------- verification
    def _token(self, raw_key: str) -> bytes:
        return hmac.new(self._cache_secret, raw_key.encode("utf-8"), hashlib.sha256).digest()

    def cached(self, raw_key: str) -> ApiKey | None:
        """The key for ``raw_key`` when it was verified less than :attr:`cache_ttl_s` ago
        (cheap: no database, no scrypt), else ``None``; then call :meth:`verify`."""
        with self._lock:
            cached = self._cache.get(self._token(raw_key))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def verify(self, raw_key: str) -> ApiKey | None:
        """The active key whose secret is ``raw_key``, or ``None``.

        The hash comparison is constant-time (:func:`hmac.compare_digest`), and a malformed key
        or an unknown id costs one scrypt evaluation too, so timing does not tell them apart.

        When a cached key expires, one thread at a time re-checks it while the others wait for
        its answer (no stampede of scrypt evaluations under load), and a raw key this process
        already verified is re-checked against its database row (still there, same hash, not
        revoked) without evaluating scrypt again.
        """
        token = self._token(raw_key)
        with self._gates[token[0] % len(self._gates)]:
            return self._verify(raw_key, token)

    def _verify(self, raw_key: str, token: bytes) -> ApiKey | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(token)
            verified_hash = self._verified.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        match = _KEY_PATTERN.match(raw_key)
        row = None
        if match:

            def fetch():
                with self._engine.connect() as conn:
                    query = select(api_keys).where(api_keys.c.key_id == match.group(1))
                    return conn.execute(query).first()

            row = self._guard(fetch)
        if row is None:
            hmac.compare_digest(hash_key(raw_key, self._dummy_salt), bytes(_DKLEN))
            return None
        if verified_hash is not None and hmac.compare_digest(verified_hash, row.key_hash):
            matches = True
        else:
            expected = bytes.fromhex(row.key_hash)
            actual = hash_key(raw_key, bytes.fromhex(row.salt), row.algorithm)
            matches = hmac.compare_digest(actual, expected)
        if not matches or row.revoked_at is not None:
            return None
        key = _row_to_key(row)
        with self._lock:
            self._cache[token] = (key, now + self.cache_ttl_s)
            self._verified[token] = row.key_hash
        return key
