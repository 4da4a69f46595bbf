"""One chat turn's state around generation: its session history in, its cache lookup, and afterwards the
turn saved to the session and the answer to the cache (both before the client sees the end, so the
next turn, on whichever replica, already finds them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from deployments import answer_cache, sessions
from deployments.answer_cache import QuestionCache
from deployments.errors import APIError
from deployments.metrics import MetricsRecorder
from deployments.redis_state import RedisUnavailable
from deployments.sessions import SessionStore, TokenCounter

Message = dict[str, Any]


@dataclass
class Turn:
    endpoint: str
    session_id: str | None = None
    own_messages: list[Message] = field(default_factory=list)
    history_messages: int = 0
    cache_key: str | None = None
    cached: dict[str, Any] | None = None

    def headers(self) -> dict[str, str]:
        out = {"X-Cache": "hit" if self.cached else "miss"}
        if self.session_id is not None:
            out["X-Session-ID"] = self.session_id
            out["X-Session-History"] = str(self.history_messages)
        return out


class Conversations:
    def __init__(
        self,
        store: SessionStore,
        cache: QuestionCache,
        count_tokens: TokenCounter,
        metrics: MetricsRecorder,
        max_model_len: int,
    ) -> None:
        self.store = store
        self.cache = cache
        self.count_tokens = count_tokens
        self.metrics = metrics
        self.max_model_len = max_model_len

    async def begin(
        self,
        headers: Any,
        body: dict[str, Any],
        endpoint: str,
        retrieval: dict[str, Any] | None = None,
        kb_version: Callable[[str], Awaitable[str]] | None = None,
    ) -> Turn:
        """Pops the extension fields, prepends the session's history to `body["messages"]` (trimmed to
        the context window), and looks the request up in the question cache."""
        turn = Turn(endpoint)
        session_id = body.pop("session_id", None) or headers.get("x-session-id")
        opt_in = body.pop("cache", None)
        if opt_in is not None and not isinstance(opt_in, bool):
            raise APIError(400, "'cache' must be a boolean", param="cache", code="invalid_type")
        if session_id is not None:
            if endpoint != "chat":
                raise APIError(
                    400, "sessions apply to /v1/chat/completions", param="session_id", code="invalid_value"
                )
            turn.session_id = sessions.check_session_id(session_id)
            await self._with_history(turn, body)
        if answer_cache.wants_cache(opt_in, body):
            if retrieval is not None and kb_version is not None:
                retrieval = {**retrieval, "version": await kb_version(retrieval["knowledge_base"])}
            turn.cache_key = answer_cache.cache_key(endpoint, body, retrieval)
            turn.cached = await self.cache.get(turn.cache_key)
            self.metrics.inc("raychat_question_cache_lookups", ("hit" if turn.cached else "miss",))
        return turn

    async def _with_history(self, turn: Turn, body: dict[str, Any]) -> None:
        assert turn.session_id is not None
        try:
            history = await self.store.load(turn.session_id)
        except RedisUnavailable as exc:
            raise APIError(
                503,
                "the session store is unavailable; retry shortly, or send the request without session_id",
                param="session_id",
                code="session_store_unavailable",
                headers={"Retry-After": "2"},
            ) from exc
        turn.own_messages = list(body["messages"])
        reserve = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(reserve, int) or isinstance(reserve, bool) or reserve <= 0:
            reserve = self.store.settings.reserve_tokens
        fitted = sessions.fit_history(
            history, turn.own_messages, budget=self.max_model_len - reserve, count=self.count_tokens
        )
        turn.history_messages = len(fitted)
        body["messages"] = sessions.with_history(turn.own_messages, fitted)

    async def finish(self, turn: Turn, answer: str, entry: dict[str, Any] | None) -> None:
        """Saves the turn to its session and, when `entry` is given, the answer to the cache."""
        if turn.session_id is not None:
            try:
                await self.store.append(turn.session_id, sessions.turn_to_store(turn.own_messages, answer))
            except RedisUnavailable:
                pass  # the answer was already generated; the warning is logged once per outage
        if entry is not None and turn.cache_key is not None and not turn.cached:
            await self.cache.put(turn.cache_key, entry)
