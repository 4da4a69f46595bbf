"""Authenticate: every `/v1/...` request and `/metrics` carries a valid credential and is within its
quota before it is routed. Pure ASGI, so a stream's chunks pass without a per-chunk cost.

A refusal says only "invalid API key", never whether the key was unknown, revoked or expired; that goes
to the security log. Failures from one address beyond a few a minute are answered slowly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from deployments.config import AuthSettings
from deployments.gateway.auth.authenticator import (
    Authenticator,
    AuthFailed,
    AuthUnavailable,
    NotPermitted,
)
from deployments.gateway.auth.guard import FailureGuard, client_address
from deployments.gateway.auth.identity import anonymous_admin
from deployments.gateway.auth.permissions import INVALID_KEY_MESSAGE
from deployments.gateway.auth.quotas import Quotas
from deployments.gateway.auth.security_log import SecurityLog
from deployments.gateway.errors import send_error
from deployments.gateway.protocol import APIError

log = logging.getLogger("raychat.auth")
_RATE_MESSAGES = {
    "requests": "Rate limit reached: requests per minute. Retry after the time in Retry-After.",
    "tokens": "Rate limit reached: tokens per minute. Retry after the time in Retry-After.",
    "daily_tokens": "Daily token budget used up. It renews at 00:00 UTC.",
}


@dataclass(frozen=True)
class Access:
    """One replica's authentication and quota services."""

    settings: AuthSettings
    authenticator: Authenticator
    quotas: Quotas
    guard: FailureGuard
    security: SecurityLog


def protected(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1" or path == "/metrics"


def bearer(headers: dict[str, str]) -> str:
    value = headers.get("authorization", "")
    scheme, _, credential = value.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


class Authenticate:
    def __init__(self, inner: Callable[..., Awaitable[None]], access: Callable[[], Access | None]) -> None:
        self.inner = inner
        self.access = access

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not protected(scope["path"]):
            await self.inner(scope, receive, send)
            return
        access = self.access()
        state = scope.setdefault("state", {})
        if access is None:
            await send_error(
                send,
                APIError(
                    503,
                    "the gateway is starting; retry shortly",
                    code="not_ready",
                    headers={"Retry-After": "1"},
                ),
            )
            return
        if not access.settings.enabled:
            state["identity"] = anonymous_admin()
            await self.inner(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

        def log_refusal(outcome: str, identity: str | None = None, **detail: Any) -> None:
            access.security.record(
                trace_id=state.get("trace_id"),
                identity=identity,
                action=f"{scope['method']} {scope['path']}",
                target=None,
                outcome=outcome,
                **detail,
            )

        try:
            credential = bearer(headers)
            if not credential:
                raise AuthFailed("no credential")
            identity = await access.authenticator.identify(credential)
        except AuthFailed as exc:
            address = client_address(headers, scope.get("client"))
            delay = await access.guard.failed(address)
            log_refusal("denied_401", reason=exc.reason, address=address, slowed=delay > 0)
            if delay:
                await asyncio.sleep(delay)
            await send_error(send, APIError(401, INVALID_KEY_MESSAGE, code="invalid_api_key"))
            return
        except NotPermitted:
            log_refusal("denied_403", reason="token maps to no role")
            await send_error(
                send, APIError(403, "this token grants no raychat role", code="permission_denied")
            )
            return
        except AuthUnavailable:
            await send_error(
                send,
                APIError(
                    503,
                    "the key store is unavailable; retry shortly",
                    code="auth_unavailable",
                    headers={"Retry-After": "2"},
                ),
            )
            return
        decision = await access.quotas.admit(identity)
        if decision.refused is not None:
            log_refusal("denied_429", identity.hashed, limit=decision.refused)
            kind = "tokens" if decision.refused == "daily_tokens" else decision.refused
            await send_error(
                send,
                APIError(
                    429,
                    _RATE_MESSAGES[decision.refused],
                    code="rate_limit_exceeded",
                    type=kind,
                    headers=decision.headers,
                ),
            )
            return
        state["identity"] = identity
        extra = [(k.encode(), v.encode()) for k, v in decision.headers.items()]

        async def send_with_limits(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and extra:
                message.setdefault("headers", []).extend(extra)
            await send(message)

        await self.inner(scope, receive, send_with_limits)
