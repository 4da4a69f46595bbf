"""A credential to an Identity: API keys through a short per-replica cache, JWTs through the JWKS.

The cache keeps a verified key's record for `key_cache_s` (at most 5 s), so a revocation reaches every
replica within that time. While Redis is down, a key verified within `outage_grace_s` keeps working and
any other key is refused with 503: never let in what cannot be checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from deployments.config import AuthSettings
from deployments.gateway.auth.identity import Identity
from deployments.gateway.auth.keys import KeyRecord, KeyStore, split
from deployments.gateway.redis_state import RedisUnavailable

log = logging.getLogger("raychat.auth")
_CACHE_LIMIT = 10_000


class AuthFailed(Exception):
    """401 invalid_api_key; `reason` goes to the security log, never to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotPermitted(Exception):
    """403: the credential is valid but grants no role (a JWT with no mapped group)."""


class AuthUnavailable(Exception):
    """503: the key store cannot be reached and this key was not verified recently."""


@dataclass
class _Cached:
    record: KeyRecord
    fetched: float


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        keys: KeyStore,
        jwt: object | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.jwt = jwt  # a jwt_tokens.JWTVerifier when sign-on is enabled
        self._clock = clock
        self._wall = wall
        self._cache: dict[str, _Cached] = {}

    async def identify(self, credential: str) -> Identity:
        parts = split(credential)
        if parts is None:
            return self._jwt_identity(credential)
        key_id, secret = parts
        record = await self._record(key_id)
        if not self.keys.hasher.matches(record, secret):
            raise AuthFailed("unknown key" if record is None else "wrong secret")
        assert record is not None
        if record.revoked is not None:
            raise AuthFailed("revoked key")
        if not record.active(self._wall()):
            raise AuthFailed("expired key")
        return record.identity(self.settings.default_limits)

    async def _record(self, key_id: str) -> KeyRecord | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached.fetched < self.settings.key_cache_s:
            return cached.record
        try:
            record = await self.keys.get(key_id)
        except RedisUnavailable as exc:
            if cached is not None and now - cached.fetched < self.settings.outage_grace_s:
                return cached.record
            raise AuthUnavailable("the key store is unavailable") from exc
        if record is None:
            self._cache.pop(key_id, None)
        else:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key_id] = _Cached(record, now)
        return record

    def _jwt_identity(self, credential: str) -> Identity:
        from deployments.gateway.auth import jwt_tokens

        if self.jwt is None or not jwt_tokens.looks_like_jwt(credential):
            raise AuthFailed("not a key" if self.jwt is None else "neither a key nor a JWT")
        assert isinstance(self.jwt, jwt_tokens.JWTVerifier)
        try:
            return self.jwt.verify(credential)
        except jwt_tokens.NoRole as exc:
            raise NotPermitted(str(exc)) from exc
        except jwt_tokens.JWKSUnavailable as exc:  # the provider's keys never loaded: cannot check
            raise AuthUnavailable("the identity provider's keys are unavailable") from exc
        except jwt_tokens.TokenRejected as exc:
            raise AuthFailed(f"jwt: {exc}") from exc
