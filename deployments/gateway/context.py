"""What the stages of one generation request know besides the request itself.

Each stage reads the typed request and this context and fills in its own part: `identify` the caller,
`parse` the request, `conversation` the turn (and, on a cache hit, the answer), `retrieval` the sources and
the request the engine gets, `generation` the answer. The parsed request is never edited; a stage that
needs a different one (history prepended, context filled in) sets `engine_request` to a new object.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request

from deployments.gateway.auth.identity import Identity, anonymous_admin
from deployments.gateway.protocol import ChatRequest, CompletionRequest
from deployments.gateway.sse import Event

Endpoint = Literal["chat", "completions"]
GenerationRequest = ChatRequest | CompletionRequest


@dataclass(frozen=True)
class Caller:
    """Who asks: the identity the Authenticate middleware verified (a key or a JWT subject)."""

    identity: Identity = field(default_factory=anonymous_admin)
    header_user: str | None = None

    def audit_user(self, declared: str | None) -> str | None:
        """The key id or JWT subject (hashed when written); a declared user only when auth is off."""
        if self.identity.kind != "anonymous":
            return self.identity.subject
        return declared or self.header_user


@dataclass
class Turn:
    """The conversation side of one request: its session and its question-cache entry."""

    session_id: str | None = None
    owner: str = ""  # the hashed identity the session belongs to
    own_messages: list[dict[str, Any]] = field(default_factory=list)
    history_messages: int = 0
    cache_key: str | None = None
    cached: dict[str, Any] | None = None

    def headers(self) -> dict[str, str]:
        out = {"X-Cache": "hit" if self.cached else "miss"}
        if self.session_id is not None:
            out["X-Session-ID"] = self.session_id
            out["X-Session-History"] = str(self.history_messages)
        return out


@dataclass(frozen=True)
class JsonAnswer:
    body: dict[str, Any]


@dataclass(frozen=True)
class StreamAnswer:
    """A stream: the events already received, then the rest as they come."""

    first: list[Event]
    rest: AsyncIterator[list[Event]]


Answer = JsonAnswer | StreamAnswer


@dataclass
class RequestContext:
    endpoint: Endpoint
    http: Request  # headers, and state: the trace id, and `audited` once a line is written
    started: float = field(default_factory=time.perf_counter)
    caller: Caller = field(default_factory=Caller)
    request: GenerationRequest | None = None
    turn: Turn = field(default_factory=Turn)
    engine_request: GenerationRequest | None = None
    sources: list[dict[str, Any]] | None = None
    answer: Answer | None = None
    _on_end: list[Callable[[], None]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.http.url.path

    def parsed(self) -> GenerationRequest:
        assert self.request is not None, "the parse stage runs first"
        return self.request

    def to_engine(self) -> GenerationRequest:
        return self.engine_request or self.parsed()

    def on_end(self, callback: Callable[[], None]) -> None:
        """Runs once when the request is over, however it ends (answer sent, stream cut, error)."""
        self._on_end.append(callback)

    def end(self) -> None:
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback()
