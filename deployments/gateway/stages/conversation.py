"""Stage 3, conversation: the session's history in front of the new turn, and the question-cache lookup.

`finish` (called by the record stage) saves the turn to the session and the answer to the cache, both
before the client sees the end, so the next turn, on whichever replica, already finds them.
"""

from __future__ import annotations

from typing import Any

from deployments.gateway import answer_cache, sessions
from deployments.gateway.answer_cache import QuestionCache
from deployments.gateway.context import JsonAnswer, RequestContext, StreamAnswer, Turn
from deployments.gateway.protocol import APIError, ChatMessage, ChatRequest
from deployments.gateway.redis_state import RedisUnavailable
from deployments.gateway.sessions import SessionStore, TokenCounter
from deployments.gateway.sse import parse
from deployments.knowledge_api import KnowledgeAPI
from deployments.metrics import MetricsRecorder


class Conversation:
    def __init__(
        self,
        store: SessionStore,
        cache: QuestionCache,
        count_tokens: TokenCounter,
        metrics: MetricsRecorder,
        max_model_len: int,
        knowledge: KnowledgeAPI,
    ) -> None:
        self.store = store
        self.cache = cache
        self.count_tokens = count_tokens
        self.metrics = metrics
        self.max_model_len = max_model_len
        self.knowledge = knowledge

    async def __call__(self, ctx: RequestContext) -> None:
        request = ctx.parsed()
        turn = Turn()
        engine = request
        if isinstance(request, ChatRequest) and request.session_id is not None:
            turn.session_id = request.session_id
            turn.owner = ctx.caller.identity.hashed
            engine = await self._with_history(turn, request)
        if request.wants_cache():
            retrieval = await self._retrieval_key(request)
            turn.cache_key = answer_cache.cache_key(ctx.endpoint, engine.engine_body(), retrieval)
            turn.cached = await self.cache.get(turn.cache_key)
            self.metrics.inc("raychat_question_cache_lookups", ("hit" if turn.cached else "miss",))
        ctx.turn = turn
        ctx.engine_request = engine
        if turn.cached:
            ctx.answer = _replay(turn.cached)

    async def _retrieval_key(self, request: Any) -> dict[str, Any] | None:
        """A knowledge-base chat's retrieval options and the knowledge base's version: any change to the
        knowledge base retires its cached answers."""
        if not isinstance(request, ChatRequest) or request.knowledge_base is None:
            return None
        return {
            "knowledge_base": request.knowledge_base,
            "top_k": request.top_k,
            "mode": request.search_mode,
            "version": await self.knowledge.version(request.knowledge_base),
        }

    async def _with_history(self, turn: Turn, request: ChatRequest) -> ChatRequest:
        assert turn.session_id is not None
        try:
            history = await self.store.load(turn.owner, turn.session_id)
        except RedisUnavailable as exc:
            raise APIError(
                503,
                "the session store is unavailable; retry shortly, or send the request without session_id",
                param="session_id",
                code="session_store_unavailable",
                headers={"Retry-After": "2"},
            ) from exc
        turn.own_messages = [m.model_dump(mode="json", exclude_unset=True) for m in request.messages]
        reserve = request.reserve_tokens() or self.store.settings.reserve_tokens
        fitted = sessions.fit_history(
            history, turn.own_messages, budget=self.max_model_len - reserve, count=self.count_tokens
        )
        turn.history_messages = len(fitted)
        messages = sessions.with_history(turn.own_messages, fitted)
        return request.model_copy(update={"messages": [ChatMessage.model_validate(m) for m in messages]})

    async def finish(self, turn: Turn, answer: str, entry: dict[str, Any] | None) -> None:
        """Saves the turn to its session and, when `entry` is given, the answer to the cache."""
        if turn.session_id is not None:
            try:
                stored = sessions.turn_to_store(turn.own_messages, answer)
                await self.store.append(turn.owner, turn.session_id, stored)
            except RedisUnavailable:
                pass  # the answer was already generated; the warning is logged once per outage
        if entry is not None and turn.cache_key is not None and not turn.cached:
            await self.cache.put(turn.cache_key, entry)


def _replay(entry: dict[str, Any]) -> JsonAnswer | StreamAnswer:
    """A cached answer goes out as it was first generated: one body, or the stream's events."""
    if entry.get("kind") == "sse":
        return StreamAnswer(first=parse(entry["events"]), rest=_nothing())
    return JsonAnswer(entry["body"])


async def _nothing() -> Any:
    return
    yield
