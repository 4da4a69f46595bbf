"""What the gateway needs to audit a request: its trace id, who asked, tokens, and the `sensitive` verdict
from the prompt and the answer (streamed answers are tapped as they pass, then scanned once at the end)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from deployments.pii import is_sensitive

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="-")
_CONTENT = re.compile(r'"(?:content|text)":"((?:[^"\\]|\\.)*)"')
_USAGE = re.compile(r'"usage":\{[^}]*"total_tokens":(\d+)')


class TraceIdFilter(logging.Filter):
    """Puts the current request's trace id on every gateway log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get()
        return True


def user_of(headers: Any, body: dict[str, Any] | None = None) -> str | None:
    """The caller's key id (bearer token) or declared user; hashed before it is written anywhere."""
    auth = headers.get("authorization") or ""
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return auth[7:].strip()
    if body and isinstance(body.get("user"), str):
        return body["user"]
    return headers.get("x-user-id")


def prompt_text(request: Any) -> str:
    """The prompt's text, from a parsed request or a plain body dict."""
    get = request.get if isinstance(request, dict) else lambda key: getattr(request, key, None)
    parts: list[str] = []
    for message in get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict)]
    prompt = get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    elif isinstance(prompt, list):
        parts += [p for p in prompt if isinstance(p, str)]
    return "\n".join(parts)


def answer_text(response: dict[str, Any]) -> str:
    texts = []
    for choice in response.get("choices", []):
        message = choice.get("message") or {}
        texts.append(message.get("content") or choice.get("text") or "")
    return "".join(texts)


class StreamTap:
    """Keeps the SSE text of a stream; the answer and usage are extracted once, after the last event."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def add(self, text: str) -> str:
        self._parts.append(text)
        return text

    def raw(self) -> str:
        return "".join(self._parts)

    def usage(self) -> dict[str, int]:
        """The last `usage` object of the stream (present when the client asked for include_usage)."""
        raw = self.raw()
        found = {}
        for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
            values = re.findall(rf'"{field}":\s?(\d+)', raw)
            if values:
                found[field] = int(values[-1])
        return found

    def answer(self) -> str:
        raw = "".join(self._parts)
        return "".join(json.loads(f'"{m}"') for m in _CONTENT.findall(raw))

    def tokens(self) -> int:
        raw = "".join(self._parts)
        usage = _USAGE.findall(raw)
        if usage:
            return int(usage[-1])
        return sum(1 for m in _CONTENT.findall(raw) if m)  # one content event per generated token


def sensitive(prompt: str, answer: str) -> bool:
    return is_sensitive(prompt, answer)


class TraceAndAudit:
    """Pure ASGI (no per-chunk overhead on streams): a uuid4 trace id per request, returned as X-Trace-ID
    and put on the gateway's log lines; requests no route audited themselves (errors, knowledge-base
    routes) get their audit line when the response is complete."""

    def __init__(
        self,
        inner: Callable[..., Awaitable[None]],
        audit_log: Callable[[], Any],
        metrics: Callable[[], Any] = lambda: None,
    ) -> None:
        self.inner = inner
        self.audit_log = audit_log
        self.metrics = metrics

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
                message.setdefault("headers", []).append((b"x-trace-id", trace_id.encode()))
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
                    user=user_of(_Headers(scope), state.get("body")),
                    endpoint=scope["path"],
                    model=None,
                    tokens=0,
                    sensitive=False,
                )
                state["audited"] = True

        try:
            await self.inner(scope, receive, send_with_trace)
        finally:
            trace_id_var.reset(token)


class _Headers:
    def __init__(self, scope: dict[str, Any]) -> None:
        self._h = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._h.get(key.lower(), default)
