"""API keys: created once, stored only as salted scrypt hashes, scoped, revocable."""

from __future__ import annotations

import hashlib
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


def test_hashes_are_salted(store) -> None:
    a = hash_key("prk_000000000000_same", b"a" * 16)
    b = hash_key("prk_000000000000_same", b"b" * 16)
    assert a != b and len(a) == 32
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
    assert Scope.WRITE.grants(Scope.READ) and not Scope.WRITE.grants(Scope.ADMIN)
    assert not Scope.READ.grants(Scope.WRITE)


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


def test_expired_cache_rechecks_a_known_key_without_scrypt_and_sees_revocation(
    tmp_path, monkeypatch
) -> None:
    import threading

    import privrank.serving.auth as auth

    store = KeyStore(make_engine(f"sqlite:///{tmp_path / 'keys.sqlite'}"), cache_ttl_s=0.0)
    created = store.create("read", name="web")
    calls = []
    real = auth.hash_key
    monkeypatch.setattr(auth, "hash_key", lambda *a, **k: calls.append(1) or real(*a, **k))

    assert store.verify(created.secret) is not None  # first sight: one scrypt evaluation
    assert len(calls) == 1
    threads = [threading.Thread(target=store.verify, args=(created.secret,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1  # expired cache, eight concurrent checks: no scrypt stampede
    wrong = created.secret[:-1] + ("A" if created.secret[-1] != "A" else "B")
    assert store.verify(wrong) is None  # a different raw key still pays scrypt and fails
    assert len(calls) == 2
    store.revoke("web")
    assert store.verify(created.secret) is None  # revocation still wins over the shortcut
