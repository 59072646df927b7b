"""User tokens: minted by write keys, signed, expiring, good for one user only."""

from __future__ import annotations

import base64
import json

import pytest

from privrank.errors import ConfigError
from privrank.serving import KeyStore, make_engine
from privrank.serving.auth import Principal, Scope
from privrank.serving.tokens import MAX_TTL_S, TOKEN_PREFIX, UserTokens

from ._util import auth


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'serving.sqlite'}")
    keys = KeyStore(engine, cache_ttl_s=0.0)
    clock = Clock()
    writer = keys.create("write", name="backend").key
    return keys, UserTokens(engine, keys, clock), clock, writer


def test_a_token_names_one_user_and_expires(setup) -> None:
    _, tokens, clock, writer = setup
    token, expires = tokens.mint(writer, "u1", 60)
    assert token.startswith(TOKEN_PREFIX) and expires == int(clock.now) + 60
    principal = tokens.verify(token)
    assert principal.scope is Scope.READ and principal.user_id == "u1"
    assert principal.may_ask_for("u1")
    assert not principal.may_ask_for("u2") and not principal.may_ask_for(1)
    assert "u1" not in principal.name and "u1" not in principal.bucket  # ids never logged
    clock.now += 60 + 6  # past the expiry and the 5 s leeway
    assert tokens.verify(token) is None


def test_integer_and_string_ids_are_different_users(setup) -> None:
    _, tokens, _, writer = setup
    principal = tokens.verify(tokens.mint(writer, 42, 60)[0])
    assert principal.may_ask_for(42) and not principal.may_ask_for("42")


def test_forged_tampered_or_foreign_tokens_are_refused(setup, tmp_path) -> None:
    keys, tokens, _, writer = setup
    token, _ = tokens.mint(writer, "u1", 60)
    header, payload, signature = token.removeprefix(TOKEN_PREFIX).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["uid"] = "u2"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert tokens.verify(f"{TOKEN_PREFIX}{header}.{forged_payload}.{signature}") is None
    assert tokens.verify(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    assert tokens.verify(f"{TOKEN_PREFIX}{unsigned}.{payload}.") is None
    other = UserTokens(make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}"), keys)
    assert other.verify(token) is None  # another server's signing secret
    assert tokens.verify("prt_not-a-token") is None


def test_revoking_the_minting_key_revokes_its_tokens(setup) -> None:
    keys, tokens, _, writer = setup
    token, _ = tokens.mint(writer, "u1", 60)
    assert tokens.verify(token) is not None
    keys.revoke("backend")
    assert tokens.verify(token) is None


def test_only_write_keys_mint_and_ttl_is_bounded(setup) -> None:
    keys, tokens, _, writer = setup
    for scope in ("read", "service"):
        with pytest.raises(ConfigError, match="write"):
            tokens.mint(keys.create(scope).key, "u1", 60)
    user = Principal(name="token:backend", scope=Scope.READ, user_id="u1")
    with pytest.raises(ConfigError, match="cannot mint"):
        tokens.mint(user, "u2", 60)
    for ttl in (0, MAX_TTL_S + 1, True):
        with pytest.raises(ConfigError, match="ttl_s"):
            tokens.mint(writer, "u1", ttl)
    for user_id in ("", None, 1.5, True):
        with pytest.raises(ConfigError, match="user_id"):
            tokens.mint(writer, user_id, 60)


def test_tokens_over_http(client, keys) -> None:
    refused = client.post("/v1/tokens", json={"user_id": "u1"}, headers=auth(keys["service"]))
    assert refused.status_code == 403
    minted = client.post(
        "/v1/tokens", json={"user_id": "u1", "ttl_s": 120}, headers=auth(keys["write"])
    )
    assert minted.status_code == 200, minted.text
    token = auth(minted.json()["token"])
    assert client.post("/v1/recommend", json={"user_id": "u1"}, headers=token).status_code == 200
    other = client.post("/v1/recommend", json={"user_id": "u2"}, headers=token)
    assert other.status_code == 403 and other.json()["error"] == "forbidden"
    rank = client.post("/v1/rank", json={"user_id": "u2", "candidates": [100]}, headers=token)
    assert rank.status_code == 403
    by_history = client.post(
        "/v1/rank", json={"history": [100], "candidates": [101]}, headers=token
    )
    assert by_history.status_code == 200
    # A user token cannot mint, ingest or administer.
    assert client.post("/v1/tokens", json={"user_id": "u2"}, headers=token).status_code == 403
    assert client.post("/v1/models/rollback", headers=token).status_code == 403
    assert (
        client.post(
            "/v1/tokens", json={"user_id": "u1", "ttl_s": 0}, headers=auth(keys["write"])
        ).status_code
        == 422
    )


def test_read_credentials_are_bounded(client, keys) -> None:
    token = client.post("/v1/tokens", json={"user_id": "u1"}, headers=auth(keys["write"])).json()[
        "token"
    ]
    for headers in (auth(keys["read"]), auth(token)):
        big_k = client.post(
            "/v1/recommend/history", json={"history": [100], "k": 101}, headers=headers
        )
        assert big_k.status_code == 403 and "k: 101 is above 100" in big_k.json()["message"]
        allow = client.post(
            "/v1/recommend/history",
            json={"history": [100], "allow": list(range(1001))},
            headers=headers,
        )
        assert allow.status_code == 403 and "allow" in allow.json()["message"]
        many = client.post(
            "/v1/rank", json={"history": [100], "candidates": list(range(1001))}, headers=headers
        )
        assert many.status_code == 403 and "candidates" in many.json()["message"]
        similar = client.get("/v1/items/100/similar?k=101", headers=headers)
        assert similar.status_code == 403
    service = client.post(
        "/v1/recommend/history", json={"history": [100], "k": 1000}, headers=auth(keys["service"])
    )
    assert service.status_code == 200
