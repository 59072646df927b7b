"""User tokens: signed, expiring credentials that may ask only about one user.

A ``write`` or ``admin`` key mints a token for one user id (``POST /v1/tokens`` or
:meth:`UserTokens.mint`) and hands it to that user's device or session; the token then
authenticates requests for that user only (:meth:`Principal.may_ask_for`), with the ``read``
scope otherwise. A token is a JWT (RFC 7519) signed with HMAC-SHA-256 (PyJWT) under the
server's token-signing secret (:data:`privrank.serving.secrets.TOKEN_SIGNING`), carrying:

- ``uid``: the user id, as a JSON integer or string (a token for ``"42"`` does not cover
  ``42``);
- ``mint``: the name of the key that minted it; revoking that key revokes its tokens (within
  the key cache's TTL);
- ``iat``, ``exp``: issue and expiry times (seconds since the epoch); at most
  :data:`MAX_TTL_S` apart;
- ``iss``: ``privrank``, ``typ``: ``user``.

Tokens start with :data:`TOKEN_PREFIX` so they are never mistaken for API keys. They are not
stored: only the signature, the expiry and the minting key's status decide.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import jwt
from sqlalchemy import Engine

from privrank.errors import ConfigError
from privrank.serving.auth import ApiKey, KeyStore, Principal, Scope
from privrank.serving.secrets import TOKEN_SIGNING, server_secret

__all__ = ["MAX_TTL_S", "TOKEN_PREFIX", "UserTokens"]

TOKEN_PREFIX = "prt_"
MAX_TTL_S = 7 * 24 * 3600
"""Longest lifetime of a user token (7 days)."""
_ALGORITHM = "HS256"
_ISSUER = "privrank"
_LEEWAY_S = 5


class UserTokens:
    """Mints and verifies user tokens.

    Args:
        engine: The serving database (holds the signing secret).
        keys: The key store (a token's minting key must still be active).
        clock: Seconds since the epoch (injectable for tests).
    """

    def __init__(
        self, engine: Engine, keys: KeyStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = server_secret(engine, TOKEN_SIGNING)
        self._keys = keys
        self._clock = clock

    def mint(self, minter: ApiKey | Principal, user_id: Any, ttl_s: int) -> tuple[str, int]:
        """A token for ``user_id`` valid for ``ttl_s`` seconds, and its expiry (epoch s).

        Raises:
            ConfigError: The minter's scope is below ``write``, it is itself a user token, the
                user id is not an int or a non-empty string, or ``ttl_s`` is outside
                ``[1, MAX_TTL_S]``.
        """
        if isinstance(minter, Principal) and minter.user_id is not None:
            raise ConfigError("a user token cannot mint tokens")
        if not minter.scope.grants(Scope.WRITE):
            raise ConfigError(
                f"minting user tokens needs scope 'write'; this key has {minter.scope.value!r}"
            )
        if isinstance(user_id, bool) or not isinstance(user_id, int | str) or user_id == "":
            raise ConfigError(f"user_id must be an integer or a non-empty string. Got {user_id!r}")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
            raise ConfigError(f"ttl_s must be an integer in [1, {MAX_TTL_S}]. Got {ttl_s!r}")
        now = int(self._clock())
        expires = now + ttl_s
        minted_by = minter.name.removeprefix("token:")
        claims = {
            "iss": _ISSUER,
            "typ": "user",
            "uid": user_id,
            "mint": minted_by,
            "iat": now,
            "exp": expires,
        }
        return TOKEN_PREFIX + jwt.encode(claims, self._secret, algorithm=_ALGORITHM), expires

    def verify(self, raw: str) -> Principal | None:
        """The principal of a valid token, or ``None`` (bad signature, expired, malformed,
        minting key revoked or unknown)."""
        if not raw.startswith(TOKEN_PREFIX):
            return None
        try:
            claims = jwt.decode(
                raw.removeprefix(TOKEN_PREFIX),
                self._secret,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                options={
                    "require": ["exp", "iat", "iss", "uid", "mint"],
                    "verify_exp": False,  # checked below against the injectable clock
                    "verify_iat": False,
                },
            )
            expires, issued = claims["exp"], claims["iat"]
            if not isinstance(expires, int) or not isinstance(issued, int):
                return None
            if self._clock() > expires + _LEEWAY_S or expires - issued > MAX_TTL_S:
                return None
        except jwt.PyJWTError:
            return None
        user_id, minted_by = claims["uid"], claims["mint"]
        if claims.get("typ") != "user" or not isinstance(minted_by, str):
            return None
        if isinstance(user_id, bool) or not isinstance(user_id, int | str):
            return None
        minter = self._keys.active_key(minted_by)
        if minter is None or not minter.scope.grants(Scope.WRITE):
            return None
        # One rate-limit bucket per subject, named by a digest: ids never reach logs or metrics.
        digest = hashlib.sha256(repr(user_id).encode("utf-8")).hexdigest()[:24]
        return Principal(
            name=f"token:{minted_by}", scope=Scope.READ, user_id=user_id, bucket=f"user:{digest}"
        )
