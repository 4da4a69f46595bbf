"""The Gateway deployment: FastAPI ingress in front of the LLM deployment.

Each route parses and checks the request itself (so every bad input gets OpenAI's error format), then
calls the LLM deployment through its DeploymentHandle and relays the answer: one JSON body, or the engine's
SSE lines as they come. Around generation sit the session history and the question cache
(`conversation.py`), retrieval for knowledge-base chats, metrics and the audit line. The knowledge-base
routes live in `knowledge_routes.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments import request_audit, sessions, validation
from deployments.answer_cache import QuestionCache, stream_complete
from deployments.audit import AuditLog
from deployments.config import AppConfig
from deployments.conversation import Conversations, Turn
from deployments.errors import APIError, from_engine_error, install_error_handlers
from deployments.knowledge_api import KnowledgeAPI
from deployments.knowledge_routes import router as knowledge_router
from deployments.metrics import MetricsRecorder
from deployments.redis_state import RedisState, RedisUnavailable
from deployments.relay import is_engine_error, join_batch, open_stream, read_body, with_sources
from deployments.sessions import SessionStore, TokenCounter

log = logging.getLogger("raychat.gateway")
log.addFilter(request_audit.TraceIdFilter())

app = FastAPI(title="raychat", docs_url=None, redoc_url=None)
install_error_handlers(app)
app.include_router(knowledge_router)
app.add_middleware(
    request_audit.TraceAndAudit,
    audit_log=lambda: getattr(app.state, "audit_log", None),
    metrics=lambda: getattr(app.state, "metrics", None),
)
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# Module-level helpers sit above the class: Serve pickles the ingress class by value when the decorators
# run, and only names bound by then travel with it.
async def _chain(first: str, rest: AsyncIterator[Any]) -> AsyncIterator[str]:
    yield first
    async for batch in rest:
        yield join_batch(batch)


@serve.deployment(name="Gateway")
@serve.ingress(app)
class Gateway:
    def __init__(
        self,
        llm: DeploymentHandle,
        embedding: DeploymentHandle,
        retriever: DeploymentHandle,
        metrics: DeploymentHandle,
        config: dict[str, Any],
    ) -> None:
        self._config = AppConfig.model_validate(config)
        self._llm = llm
        self._kb = KnowledgeAPI(embedding, retriever, self._config.knowledge)
        self._model_id = self._config.llm.model_id
        self._created = int(time.time())
        gw = self._config.gateway
        self._audit = AuditLog(
            self._config.audit_path, max_bytes=gw.audit_max_bytes, backups=gw.audit_backups
        )
        self._replica = serve.get_replica_context().replica_tag
        self.metrics = MetricsRecorder(metrics, self._config.metrics, self._replica)
        self._redis = RedisState(self._config.redis)
        self._sessions = SessionStore(self._redis, self._config.sessions)
        self._count_tokens = TokenCounter(
            self._config.model_path, self._config.sessions.message_overhead_tokens
        )
        self._conversations = Conversations(
            self._sessions,
            QuestionCache(self._redis, self._config.cache),
            self._count_tokens,
            self.metrics,
            self._config.llm.max_model_len,
        )
        app.state.audit_log = self._audit
        app.state.metrics = self.metrics
        app.state.kb_api = self._kb
        app.state.max_body_bytes = gw.max_body_bytes

    def audit(self, request: Request, *, model: str | None, tokens: int, prompt: str, answer: str) -> None:
        """One audit line for this request; the texts only decide `sensitive` and are not written."""
        request.state.audited = True
        self._audit.record(
            trace_id=request.state.trace_id,
            user=request_audit.user_of(request.headers, getattr(request.state, "body", None)),
            endpoint=request.url.path,
            model=model,
            tokens=tokens,
            sensitive=request_audit.sensitive(prompt, answer),
        )

    async def _json_body(self, request: Request) -> dict[str, Any]:
        body = validation.parse_json_object(await read_body(request, self._config.gateway.max_body_bytes))
        request.state.body = {"user": body.get("user")}
        return body

    def _headers(self, turn: Turn) -> dict[str, str]:
        return {**turn.headers(), "X-Raychat-Replica": self._replica}

    # --- health -----------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            await asyncio.wait_for(
                self._llm.check_health.remote(), timeout=self._config.gateway.readiness_timeout_s
            )
        except Exception as exc:  # any failure to answer means not ready
            message = f"LLM deployment not ready: {type(exc).__name__}"
            return APIError(503, message, code="not_ready").response()
        return JSONResponse({"status": "ready", "model": self._model_id})

    # --- models -----------------------------------------------------------------------------------
    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self._model_id,
            "object": "model",
            "created": self._created,
            "owned_by": "raychat",
            "max_model_len": self._config.llm.max_model_len,
        }

    @app.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self._model_card()]}

    @app.get("/v1/models/{model:path}")
    async def get_model(self, model: str) -> dict[str, Any]:
        if model != self._model_id:
            raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
        return self._model_card()

    # --- metrics and sessions -------------------------------------------------------------------
    @app.get("/metrics")
    async def prometheus_metrics(self) -> Response:
        await self.metrics.flush()
        return Response(await self.metrics.aggregator.render.remote(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/sessions/{session_id}")
    async def get_session(self, session_id: str) -> dict[str, Any]:
        sessions.check_session_id(session_id)
        messages = await self._session_call(self._sessions.messages(session_id))
        if messages is None:
            raise APIError(
                404, f"session {session_id!r} does not exist", param="session_id", code="session_not_found"
            )
        return {"id": session_id, "object": "session", "messages": messages}

    @app.delete("/v1/sessions/{session_id}")
    async def delete_session(self, session_id: str) -> dict[str, Any]:
        sessions.check_session_id(session_id)
        if not await self._session_call(self._sessions.delete(session_id)):
            raise APIError(
                404, f"session {session_id!r} does not exist", param="session_id", code="session_not_found"
            )
        return {"id": session_id, "object": "session", "deleted": True}

    async def _session_call(self, call: Any) -> Any:
        try:
            return await call
        except RedisUnavailable as exc:
            raise APIError(
                503,
                "the session store is unavailable; retry shortly",
                code="session_store_unavailable",
                headers={"Retry-After": "2"},
            ) from exc

    # --- generation -------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        self.metrics.ensure_started()
        started = time.perf_counter()
        body = await self._json_body(request)
        rag = self._kb.rag_options(body)
        validation.check_messages(body)
        turn = await self._conversations.begin(
            request.headers, body, "chat", retrieval=rag, kb_version=self._kb.version
        )
        if turn.cached:
            return await self._replay(request, body, turn, started)
        sources = None
        if rag is not None:
            question = next(
                (
                    m.get("content")
                    for m in reversed(body["messages"])
                    if m.get("role") == "user" and isinstance(m.get("content"), str)
                ),
                "",
            )
            context, sources = await self._kb.context_for(
                rag["knowledge_base"], question, top_k=rag["top_k"], mode=rag["mode"]
            )
            body["messages"] = self._kb.rag_messages(body["messages"], context)
        chat = validation.chat_request(body, self._model_id)
        return await self._generate(request, "chat", chat, bool(chat.stream), turn, started, sources)

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        self.metrics.ensure_started()
        started = time.perf_counter()
        body = await self._json_body(request)
        turn = await self._conversations.begin(request.headers, body, "completions")
        if turn.cached:
            return await self._replay(request, body, turn, started)
        completion = validation.completion_request(body, self._model_id)
        return await self._generate(
            request, "completions", completion, bool(completion.stream), turn, started
        )

    async def _replay(self, http: Request, body: dict[str, Any], turn: Turn, started: float) -> Response:
        """A question-cache hit: the stored answer (or stream) goes out as it was first generated."""
        entry = turn.cached or {}
        endpoint = http.url.path
        if entry.get("kind") == "sse":
            events = entry["events"]
            tap = request_audit.StreamTap()
            tap.add(events)
            await self._conversations.finish(turn, tap.answer(), None)
            prompt = request_audit.prompt_text(body)
            self._record(http, endpoint, started, tap.answer(), tap.tokens(), prompt=prompt)

            async def replay() -> AsyncIterator[str]:
                for event in events.split("\n\n"):
                    if event:
                        yield event + "\n\n"

            return StreamingResponse(
                replay(), media_type="text/event-stream", headers={**STREAM_HEADERS, **self._headers(turn)}
            )
        answer = entry["body"]
        text = request_audit.answer_text(answer)
        await self._conversations.finish(turn, text, None)
        tokens = int((answer.get("usage") or {}).get("total_tokens", 0))
        self._record(http, endpoint, started, text, tokens, prompt=request_audit.prompt_text(body))
        return JSONResponse(answer, headers=self._headers(turn))

    def _record(
        self,
        http: Request,
        endpoint: str,
        started: float,
        answer: str,
        tokens: int,
        *,
        prompt: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Latency and token metrics, and the audit line, for one finished generation."""
        labels = (self._model_id, endpoint)
        self.metrics.observe("model_inference_latency_seconds", labels, time.perf_counter() - started)
        usage = usage or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or max(tokens - prompt_tokens, 0))
        self.metrics.inc("raychat_tokens", (self._model_id, "prompt"), prompt_tokens)
        self.metrics.inc("raychat_tokens", (self._model_id, "completion"), completion_tokens)
        self.audit(http, model=self._model_id, tokens=tokens, prompt=prompt, answer=answer)

    async def _generate(
        self,
        http: Request,
        method: str,
        request: Any,
        stream: bool,
        turn: Turn,
        started: float,
        sources: list[dict[str, Any]] | None = None,
    ) -> Response:
        self.metrics.gauge_add("concurrent_session_count", 1)
        try:
            return await self._start_generation(http, method, request, stream, turn, started, sources)
        except BaseException:
            self.metrics.gauge_add("concurrent_session_count", -1)
            raise

    async def _start_generation(
        self,
        http: Request,
        method: str,
        request: Any,
        stream: bool,
        turn: Turn,
        started: float,
        sources: list[dict[str, Any]] | None,
    ) -> Response:
        handle = getattr(self._llm.options(stream=True), method)
        try:
            first, responses = await open_stream(
                lambda: handle.remote(request),
                self._config.gateway.replica_failure_retries,
                on_retry=lambda: self.metrics.inc("raychat_llm_replica_retries", (self._model_id,)),
            )
        except StopAsyncIteration:
            raise APIError(500, "the engine returned no response", code="empty_response") from None
        except BackPressureError as exc:
            raise APIError(
                503,
                "the LLM deployment is at capacity; retry shortly",
                code="overloaded",
                headers={"Retry-After": "1"},
            ) from exc
        if not stream:
            if is_engine_error(first):
                raise from_engine_error(first)
            answer = first.model_dump(mode="json", exclude_none=True)
            if sources is not None:
                answer["sources"] = sources
            text = request_audit.answer_text(answer)
            usage = answer.get("usage") or {}
            await self._conversations.finish(turn, text, {"kind": "json", "body": answer})
            self.metrics.gauge_add("concurrent_session_count", -1)
            self._record(
                http,
                http.url.path,
                started,
                text,
                int(usage.get("total_tokens", 0)),
                prompt=request_audit.prompt_text(request),
                usage=usage,
            )
            return JSONResponse(answer, headers=self._headers(turn))
        if isinstance(first, list) and first and is_engine_error(first[0]):
            raise from_engine_error(first[0])
        if sources is not None:
            first = with_sources(first, sources)
        http.state.audited = True  # written when the stream ends
        return StreamingResponse(
            self._relay(http, request, first, responses, turn, started),
            media_type="text/event-stream",
            headers={**STREAM_HEADERS, **self._headers(turn)},
        )

    async def _relay(
        self, http: Request, request: Any, first: Any, rest: AsyncIterator[Any], turn: Turn, started: float
    ) -> AsyncIterator[str]:
        tap = request_audit.StreamTap()
        finished = False
        try:
            first_text = join_batch(first)
            self.metrics.observe(
                "raychat_time_to_first_token_seconds",
                (self._model_id, http.url.path),
                time.perf_counter() - started,
            )
            async for text in _chain(first_text, rest):
                tap.add(text)
                if "data: [DONE]" in text:
                    # Save the turn before the client sees the end: its next turn must find it.
                    events = tap.raw()
                    entry = {"kind": "sse", "events": events} if stream_complete(events) else None
                    await self._conversations.finish(turn, tap.answer(), entry)
                    finished = True
                yield text
        except Exception as exc:  # the stream is already open: report in-band, then close it
            log.exception("stream failed")
            body = APIError(500, f"generation failed: {type(exc).__name__}", code="stream_error").body()
            yield f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n"
        finally:
            self.metrics.gauge_add("concurrent_session_count", -1)
            if not finished and turn.session_id is not None:
                log.info("stream for session %s ended early; the turn is not saved", turn.session_id)
            self._record(
                http,
                http.url.path,
                started,
                tap.answer(),
                tap.tokens(),
                prompt=request_audit.prompt_text(request),
                usage=tap.usage(),
            )
