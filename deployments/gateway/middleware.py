"""The gateway's ASGI middleware: a trace id for every request, the request counter, the audit line
for requests that no generation route audited itself (errors, knowledge-base routes), and the security
headers every response carries."""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from deployments.gateway.errors import send_error
from deployments.gateway.protocol import APIError

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="-")


class TraceIdFilter(logging.Filter):
    """Puts the current request's trace id on every gateway log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get()
        return True


def user_of(state: dict[str, Any], headers: Any) -> str | None:
    """The verified key id or JWT subject (hashed before it is written anywhere); never the credential.
    Only with auth off (anonymous) a declared user stands in. A refused request has no user."""
    identity = state.get("identity")
    if identity is None:
        return None
    if identity.kind != "anonymous":
        return str(identity.subject)
    body = state.get("body")
    if isinstance(body, dict) and isinstance(body.get("user"), str):
        return str(body["user"])
    return headers.get("x-user-id")


class TraceAndAudit:
    """Pure ASGI (no per-chunk overhead on streams): a uuid4 trace id per request, returned as X-Trace-ID
    and put on the gateway's log lines; requests no route audited themselves (errors, knowledge-base
    routes) get their audit line when the response is complete."""

    def __init__(
        self,
        inner: Callable[..., Awaitable[None]],
        audit_log: Callable[[], Any],
        metrics: Callable[[], Any] = lambda: None,
        version: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.inner = inner
        self.audit_log = audit_log
        self.metrics = metrics
        self.version = version

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        trace_id = str(uuid.uuid4())
        state = scope.setdefault("state", {})
        state["trace_id"] = trace_id
        token = trace_id_var.set(trace_id)

        status = [0]

        async def send_with_trace(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers.append((b"x-trace-id", trace_id.encode()))
                version = self.version()
                if version:
                    headers.append((b"x-raychat-version", version.encode()))
                status[0] = int(message.get("status", 0))
            await send(message)
            done = message["type"] == "http.response.body" and not message.get("more_body", False)
            metrics = self.metrics()
            if done and metrics is not None:
                # The route's template, not the raw path: one series per route, not per document.
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or "unmatched"
                metrics.inc("raychat_requests", (endpoint, str(status[0])))
            audit = self.audit_log()
            if done and audit is not None and not state.get("audited") and scope["path"].startswith("/v1/"):
                audit.record(
                    trace_id=trace_id,
                    user=user_of(state, _Headers(scope)),
                    endpoint=scope["path"],
                    model=None,
                    tokens=0,
                    sensitive=False,
                )
                state["audited"] = True

        # API requests in flight, whatever they do (an upload too): an upgrade waits for none before it
        # deletes a colour.
        counted = self.metrics() if scope["path"].startswith("/v1/") else None
        if counted is not None:
            counted.gauge_add("raychat_requests_in_flight", 1)
        try:
            await self.inner(scope, receive, send_with_trace)
        finally:
            if counted is not None:
                counted.gauge_add("raychat_requests_in_flight", -1)
            trace_id_var.reset(token)


class _Headers:
    def __init__(self, scope: dict[str, Any]) -> None:
        self._h = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._h.get(key.lower(), default)


class StripRoutePrefix:
    """An app deployed under a route prefix (an upgrade's second colour, `/<app name>`) gets the prefixed
    path from Serve, with the prefix as `root_path`. The prefix is taken off here, before anything else
    looks at the path, so every check (authentication first: it decides by `/v1/`) sees the same path
    whatever prefix the app has."""

    def __init__(self, inner: Callable[..., Awaitable[None]]) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        root = scope.get("root_path", "")
        if scope["type"] == "http" and root:
            path = scope.get("path", "")
            if path.startswith(root):
                scope = {**scope, "path": path[len(root) :] or "/", "root_path": ""}
                raw = scope.get("raw_path")
                if isinstance(raw, bytes) and raw.startswith(root.encode()):
                    scope["raw_path"] = raw[len(root) :] or b"/"
        await self.inner(scope, receive, send)


class RefuseControlCharacters:
    """A path with a control character is refused before routing: Starlette's route patterns end in `$`,
    which matches before a trailing newline, so `DELETE .../documents/a.txt%0A` would reach `a.txt`."""

    def __init__(self, inner: Callable[..., Awaitable[None]]) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            await send_error(
                send, APIError(400, "the request path holds a control character", code="invalid_path")
            )
            return
        await self.inner(scope, receive, send)


class SecurityHeaders:
    """On every response (the console's page and the API alike): the Content-Security-Policy from
    `console.content_security_policy` (no inline script, no framing), no MIME sniffing, no framing for
    browsers that predate CSP, and no Referer sent anywhere from the console."""

    FIXED = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    )

    def __init__(self, inner: Callable[..., Awaitable[None]], policy: Callable[[], str]) -> None:
        self.inner = inner
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers.extend(self.FIXED)
                headers.append((b"content-security-policy", self.policy().encode()))
            await send(message)

        await self.inner(scope, receive, send_with_headers)
