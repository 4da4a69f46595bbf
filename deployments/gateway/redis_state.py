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
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import valkey.asyncio as valkey
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from deployments.config import RedisSettings
from deployments.gateway.auth.secrets import read_secret

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
            **connect_kwargs(settings),
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
            log.warning("Redis at %s is back", safe_url(self.settings.url))
            self._down_until = None
        return result

    def _mark_down(self, exc: BaseException) -> None:
        if self._down_until is None:
            log.warning(
                "Redis at %s is unavailable (%s: %s); serving without cache, sessions refused",
                safe_url(self.settings.url),
                type(exc).__name__,
                exc,
            )
        self._timeouts = 0
        self._down_until = self._clock() + self.settings.retry_interval_s


def read_password(path: Path) -> str:
    """The password in `path` (its first line). The message names the file, never its content."""
    value = read_secret(path)
    if value is None:
        raise FileNotFoundError(f"redis.password_file {path} is missing or empty")
    return value.splitlines()[0]


def connect_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """Keyword arguments for `valkey.Valkey.from_url(settings.url, ...)`, sync or asyncio: timeouts,
    credentials and TLS. Every client raychat opens goes through here, so none forgets the CA or the
    password. A user or password inside the URL wins over these (valkey applies the URL's options last)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
    }
    if settings.username is not None:
        kwargs["username"] = settings.username
    if settings.password_file is not None:
        # Read once, here: the password lives in the client object, not in settings, logs or URLs.
        kwargs["password"] = read_password(settings.password_file)
    if urlsplit(settings.url).scheme == "rediss":
        # Only for rediss: a plain connection class would reject ssl_* arguments.
        kwargs.update(
            ssl_cert_reqs="required",
            # valkey-py does not check the name by default; a CA-signed certificate for another host
            # must not pass.
            ssl_check_hostname=True,
            ssl_min_version=ssl.TLSVersion.TLSv1_2,
        )
        if settings.ca_file is not None:
            kwargs["ssl_ca_certs"] = str(settings.ca_file)
    return kwargs


def safe_url(url: str) -> str:
    """The URL without its credentials, for log lines and error messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
