"""Requests per minute, tokens per minute and a daily token budget per identity, across every replica.

One Lua script per request checks all three and counts the request atomically in Redis (one round trip);
tokens are charged when the answer is complete. Windows are UTC minutes and days, so every replica
agrees on when they reset. While Redis is down each replica limits on its own with `limits`' in-memory
fixed windows: a caller then gets at most the limit per replica, never unlimited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from deployments.config import Limits
from deployments.gateway.auth.identity import Identity
from deployments.gateway.redis_state import RedisState, RedisUnavailable

USAGE_TTL_S = 8 * 86400  # a week of per-day usage stays readable
_NONE = -1

# KEYS: requests this minute, tokens this minute, today's usage hash. ARGV: rpm, tpm, daily (-1: none).
_ADMIT = """
local req = tonumber(redis.call('GET', KEYS[1]) or '0')
local tok = tonumber(redis.call('GET', KEYS[2]) or '0')
local day = tonumber(redis.call('HGET', KEYS[3], 'tokens') or '0')
local rpm, tpm, daily = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local refused = ''
if rpm >= 0 and req >= rpm then refused = 'requests'
elseif tpm >= 0 and tok >= tpm then refused = 'tokens'
elseif daily >= 0 and day >= daily then refused = 'daily_tokens' end
if refused == '' then
  req = redis.call('INCR', KEYS[1])
  if req == 1 then redis.call('EXPIRE', KEYS[1], 61) end
  redis.call('HINCRBY', KEYS[3], 'requests', 1)
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
return {refused, req, tok, day}
"""


@dataclass(frozen=True)
class Decision:
    refused: str | None  # None, "requests", "tokens" or "daily_tokens"
    headers: dict[str, str] = field(default_factory=dict)
    retry_after_s: int = 0


@dataclass(frozen=True)
class Usage:
    requests: int
    tokens: int


def _day(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now))


class Quotas:
    def __init__(self, redis: RedisState, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self._clock = clock
        self._admit = redis.client.register_script(_ADMIT)
        self._local = FixedWindowRateLimiter(MemoryStorage())

    def _keys(self, subject: str, now: float) -> tuple[str, str, str]:
        minute = str(int(now // 60))
        return (
            self.redis.key("rl", "req", minute, subject),
            self.redis.key("rl", "tok", minute, subject),
            self.redis.key("usage", _day(now), subject),
        )

    async def admit(self, identity: Identity) -> Decision:
        """Counts one request against the identity's limits, or refuses it."""
        limits = identity.limits
        if limits.rpm is None and limits.tpm is None and limits.daily_tokens is None:
            return Decision(None)
        now = self._clock()
        keys = self._keys(identity.hashed, now)
        args = [_arg(limits.rpm), _arg(limits.tpm), _arg(limits.daily_tokens), USAGE_TTL_S]
        try:
            refused, req, tok, day = await self.redis.run(lambda _: self._admit(keys=list(keys), args=args))
        except RedisUnavailable:
            return self._admit_locally(identity, now)
        del day  # checked by the script; the daily budget has no OpenAI header
        return _decision(refused or None, limits, int(req), int(tok), 60 - int(now % 60), now)

    async def charge(self, identity: Identity, tokens: int) -> None:
        """Adds a finished request's tokens (prompt plus completion) to its minute and its day."""
        if tokens <= 0:
            return
        now = self._clock()
        _, tok_key, usage_key = self._keys(identity.hashed, now)

        async def write(client: Any) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.incrby(tok_key, tokens)
                pipe.expire(tok_key, 61)
                pipe.hincrby(usage_key, "tokens", tokens)
                pipe.expire(usage_key, USAGE_TTL_S)
                await pipe.execute()

        try:
            await self.redis.run(write)
        except RedisUnavailable:
            pass
        self._charge_locally(identity, tokens)

    async def usage_today(self, subjects: list[str]) -> dict[str, Usage]:
        """Requests and tokens today per hashed subject."""
        day = _day(self._clock())

        async def read(client: Any) -> list[dict[str, str]]:
            async with client.pipeline(transaction=False) as pipe:
                for subject in subjects:
                    pipe.hgetall(self.redis.key("usage", day, subject))
                return await pipe.execute()

        rows = await self.redis.run(read) if subjects else []
        return {
            subject: Usage(int(row.get("requests", 0)), int(row.get("tokens", 0)))
            for subject, row in zip(subjects, rows, strict=True)
        }

    # --- while Redis is down: per replica ------------------------------------------------------------
    def _items(self, limits: Limits) -> dict[str, Any]:
        items: dict[str, Any] = {}
        if limits.rpm is not None:
            items["requests"] = RateLimitItemPerMinute(limits.rpm)
        if limits.tpm is not None:
            items["tokens"] = RateLimitItemPerMinute(limits.tpm)
        if limits.daily_tokens is not None:
            items["daily_tokens"] = RateLimitItemPerDay(limits.daily_tokens)
        return items

    def _admit_locally(self, identity: Identity, now: float) -> Decision:
        items, subject = self._items(identity.limits), identity.hashed
        for kind in ("tokens", "daily_tokens"):
            if kind in items and not self._local.test(items[kind], subject):
                return self._local_decision(kind, identity, items, now)
        if "requests" in items and not self._local.hit(items["requests"], subject):
            return self._local_decision("requests", identity, items, now)
        return self._local_decision(None, identity, items, now)

    def _local_decision(
        self, refused: str | None, identity: Identity, items: dict[str, Any], now: float
    ) -> Decision:
        def used(kind: str, limit: int | None) -> int:
            if kind not in items or limit is None:
                return 0
            return limit - self._local.get_window_stats(items[kind], identity.hashed).remaining

        limits = identity.limits
        req, tok = used("requests", limits.rpm), used("tokens", limits.tpm)
        return _decision(refused, limits, req, tok, 60 - int(now % 60), now)

    def _charge_locally(self, identity: Identity, tokens: int) -> None:
        items = self._items(identity.limits)
        for kind in ("tokens", "daily_tokens"):
            if kind in items:
                self._local.hit(items[kind], identity.hashed, cost=tokens)


def _arg(limit: int | None) -> int:
    return _NONE if limit is None else limit


def _decision(refused: str | None, limits: Limits, req: int, tok: int, reset_s: int, now: float) -> Decision:
    """OpenAI's x-ratelimit-* headers, and Retry-After for a refusal."""
    headers: dict[str, str] = {}
    if limits.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(limits.rpm - req, 0))
        headers["x-ratelimit-reset-requests"] = f"{reset_s}s"
    if limits.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(max(limits.tpm - tok, 0))
        headers["x-ratelimit-reset-tokens"] = f"{reset_s}s"
    retry = 0
    if refused == "daily_tokens":
        retry = 86400 - int(now % 86400)
    elif refused is not None:
        retry = reset_s
    if refused is not None:
        headers["retry-after"] = str(retry)
    return Decision(refused, headers, retry)
