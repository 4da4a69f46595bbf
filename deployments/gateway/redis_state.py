"""The gateway's one Redis connection, and what it does when Redis goes away.

Redis holds only state we can live without for a while (sessions, cached answers), so an outage must not
fail requests: a refused or broken connection marks Redis down, logs one warning, and for
`retry_interval_s` every call fails at once with `RedisUnavailable` instead of waiting on a dead socket.
The first call after that interval tries again; when it succeeds Redis is back, with nothing to restart.
A timeout fails only its own call until `timeouts_before_down` come in a row: under a load burst the
gateway's own event loop reads late, and treating that as an outage would send every cached question to
the engine exactly when it is busiest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import valkey.asyncio as valkey
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from deployments.config import RedisSettings

log = logging.getLogger("raychat.redis")
T = TypeVar("T")
_OUTAGE_ERRORS = (ValkeyConnectionError, ValkeyTimeoutError, OSError, TimeoutError)


class RedisUnavailable(RuntimeError):
    """Redis could not be reached; callers degrade (no cache) or refuse (named sessions)."""


class RedisState:
    def __init__(self, settings: RedisSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self._clock = clock
        self._down_until: float | None = None
        self._timeouts = 0
        self.client = valkey.Valkey.from_url(
            settings.url,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
            decode_responses=True,
            health_check_interval=0,
            retry_on_timeout=False,
        )

    @property
    def available(self) -> bool:
        return self._down_until is None

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def run(self, call: Callable[[valkey.Valkey], Awaitable[T]]) -> T:
        """`call(client)`, or RedisUnavailable at once while Redis is known to be down."""
        if self._down_until is not None and self._clock() < self._down_until:
            raise RedisUnavailable("Redis is unavailable")
        try:
            result = await call(self.client)
        except (ValkeyTimeoutError, TimeoutError) as exc:
            self._timeouts += 1
            if self._timeouts < self.settings.timeouts_before_down:
                raise RedisUnavailable(f"Redis timed out ({self._timeouts} in a row)") from exc
            self._mark_down(exc)
            raise RedisUnavailable(f"Redis is unavailable: {type(exc).__name__}") from exc
        except _OUTAGE_ERRORS as exc:
            self._mark_down(exc)
            raise RedisUnavailable(f"Redis is unavailable: {type(exc).__name__}") from exc
        self._timeouts = 0
        if self._down_until is not None:
            log.warning("Redis at %s is back", _safe_url(self.settings.url))
            self._down_until = None
        return result

    def _mark_down(self, exc: BaseException) -> None:
        if self._down_until is None:
            log.warning(
                "Redis at %s is unavailable (%s: %s); serving without cache, sessions refused",
                _safe_url(self.settings.url),
                type(exc).__name__,
                exc,
            )
        self._timeouts = 0
        self._down_until = self._clock() + self.settings.retry_interval_s


def _safe_url(url: str) -> str:
    """The URL without its password, for log lines."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
