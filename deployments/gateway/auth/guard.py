"""The brute-force guard: failed credentials are counted per client address and UTC minute in Redis (so
two replicas do not double the allowance), and beyond a few a minute every further failure from that
address waits before its 401, so guessing keys runs at a crawl. While Redis is down each replica counts
on its own with `limits`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from deployments.gateway.redis_state import RedisState, RedisUnavailable


class FailureGuard:
    def __init__(
        self,
        redis: RedisState | None,
        free_per_minute: int,
        delay_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.free = free_per_minute
        self.delay_s = delay_s
        self._clock = clock
        self._item = RateLimitItemPerMinute(free_per_minute)
        self._local = FixedWindowRateLimiter(MemoryStorage())

    async def failed(self, address: str) -> float:
        """Counts a failure; the seconds to wait before answering it (0 while under the free count)."""
        if self.redis is not None:
            key = self.redis.key("authfail", str(int(self._clock() // 60)), address)

            async def count(client: Any) -> list[Any]:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.incr(key)
                    pipe.expire(key, 61)
                    return await pipe.execute()

            try:
                failures = int((await self.redis.run(count))[0])
                return 0.0 if failures <= self.free else self.delay_s
            except RedisUnavailable:
                pass
        return 0.0 if self._local.hit(self._item, "auth-failure", address) else self.delay_s


def client_address(headers: dict[str, str], scope_client: tuple[str, int] | None) -> str:
    """The address the ingress saw (Nginx and Traefik set X-Real-IP, replacing any the client sent),
    else the peer's; the Serve port itself listens on loopback only."""
    address = headers.get("x-real-ip") or (scope_client[0] if scope_client else "unknown")
    return address[:64]  # a header, so bounded before it names a Redis key
