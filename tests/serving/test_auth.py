"""API keys: created once, stored only as salted, peppered HMAC hashes, scoped, revocable."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from pathlib import Path

import pytest

from privrank.errors import ConfigError
from privrank.serving import KeyStore, NotFoundError, Scope, make_engine
from privrank.serving.auth import hash_key


@pytest.fixture
def store(tmp_path) -> KeyStore:
    return KeyStore(make_engine(f"sqlite:///{tmp_path / 'keys.sqlite'}"))


def database_bytes(directory: Path) -> bytes:
    """The SQLite file and its WAL and shared-memory files, as they are on disk."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("keys.sqlite*")))


def test_raw_keys_never_reach_the_database(store, tmp_path) -> None:
    created = [store.create(scope, name=f"k-{scope}") for scope in ("read", "write", "admin")]
    on_disk = database_bytes(tmp_path)
    assert on_disk  # the file and its WAL exist
    for key in created:
        secret = key.secret.split("_", 2)[2]  # prk_<id>_<secret>; the secret may hold "_"
        assert key.secret.encode() not in on_disk
        assert secret.encode() not in on_disk
        assert hashlib.sha256(key.secret.encode()).hexdigest().encode() not in on_disk
        assert key.key.key_id.encode() in on_disk  # the public id is stored in clear


def test_hashes_are_salted_and_peppered(store) -> None:
    a = hash_key("prk_000000000000_same", b"a" * 16, b"pepper")
    b = hash_key("prk_000000000000_same", b"b" * 16, b"pepper")
    c = hash_key("prk_000000000000_same", b"a" * 16, b"other pepper")
    assert len({a, b, c}) == 3 and len(a) == 32
    # HMAC-SHA-256 under the pepper, computed independently.
    expected = hmac.new(b"pepper", b"a" * 16 + b"prk_000000000000_same", "sha256").digest()
    assert a == expected
    first, second = store.create("read"), store.create("read")
    assert first.secret != second.secret


def test_verify_create_list_revoke(store) -> None:
    created = store.create(Scope.WRITE, name="ingest")
    assert created.secret.startswith(f"prk_{created.key.key_id}_")
    key = store.verify(created.secret)
    assert key is not None and key.name == "ingest" and key.scope is Scope.WRITE
    assert store.verify(created.secret + "x") is None
    assert store.verify("") is None
    assert [k.name for k in store.list()] == ["ingest"]
    assert store.count_active() == 1
    revoked = store.revoke("ingest")
    assert revoked.revoked_at is not None and not revoked.active
    assert store.verify(created.secret) is None
    assert store.count_active() == 0
    store.revoke("ingest")  # idempotent
    with pytest.raises(NotFoundError):
        store.revoke("missing")


def test_invalid_scope_or_name_or_duplicate(store) -> None:
    with pytest.raises(ConfigError, match="scope"):
        store.create("superuser")
    with pytest.raises(ConfigError, match="key name"):
        store.create("read", name="has space")
    store.create("read", name="dup")
    with pytest.raises(ConfigError, match="already exists"):
        store.create("admin", name="dup")


def test_scopes_are_ordered() -> None:
    assert Scope.ADMIN.grants(Scope.WRITE) and Scope.ADMIN.grants(Scope.READ)
    assert Scope.WRITE.grants(Scope.SERVICE) and Scope.WRITE.grants(Scope.READ)
    assert not Scope.WRITE.grants(Scope.ADMIN)
    assert Scope.SERVICE.grants(Scope.READ) and not Scope.SERVICE.grants(Scope.WRITE)
    assert not Scope.READ.grants(Scope.SERVICE)


@pytest.mark.postgres
def test_postgresql_key_store() -> None:
    url = os.environ.get("PRIVRANK_TEST_POSTGRES_URL")
    if not url:
        pytest.skip('PRIVRANK_TEST_POSTGRES_URL is not set (eval "$(.ci/postgres.sh)")')
    engine = make_engine(url)
    store = KeyStore(engine)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    created = store.create("read", name=name)
    assert store.verify(created.secret).name == name
    store.revoke(name)
    assert store.verify(created.secret) is None
    engine.dispose()


def test_expired_cache_rechecks_the_database_and_sees_revocation(tmp_path) -> None:
    store = KeyStore(make_engine(f"sqlite:///{tmp_path / 'keys.sqlite'}"), cache_ttl_s=0.0)
    created = store.create("read", name="web")
    assert store.verify(created.secret) is not None
    wrong = created.secret[:-1] + ("A" if created.secret[-1] != "A" else "B")
    assert store.verify(wrong) is None
    KeyStore(store.engine).revoke("web")  # another process: this one's cache is not told
    assert store.verify(created.secret) is None


def test_legacy_scrypt_keys_verify_once_and_are_rehashed(tmp_path) -> None:
    import privrank.serving.auth as auth

    store = KeyStore(make_engine(f"sqlite:///{tmp_path / 'keys.sqlite'}"), cache_ttl_s=0.0)
    created = store.create("service", name="old")
    salt = b"s" * 16
    legacy = hashlib.scrypt(created.secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    with store.engine.begin() as conn:  # as an earlier privrank version stored it
        conn.execute(
            auth.api_keys.update()
            .where(auth.api_keys.c.name == "old")
            .values(algorithm="scrypt$16384$8$1", salt=salt.hex(), key_hash=legacy.hex())
        )
    assert store.verify(created.secret).name == "old"
    with store.engine.connect() as conn:
        row = conn.execute(auth.api_keys.select().where(auth.api_keys.c.name == "old")).first()
    assert row.algorithm == "hmac-sha256" and row.key_hash != legacy.hex()
    assert store.verify(created.secret).name == "old"  # now under HMAC
    assert store.verify(created.secret[:-1] + "#") is None


def test_bad_keys_cost_no_scrypt(store, monkeypatch) -> None:
    """A bad key costs one HMAC and one indexed read, never a memory-hard hash."""
    calls = []
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or b"")
    created = store.create("read")
    for raw in ("nonsense", created.secret[:-1] + "#", "prk_000000000000_" + "x" * 43):
        assert store.verify(raw) is None
    assert store.verify(created.secret) is not None
    assert calls == []
