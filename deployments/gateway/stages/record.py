"""Stage 6, record: the answer goes out, and what it cost is written down once it is complete.

For a body at once; for a stream as its events pass (the turn is saved before the client sees `[DONE]`,
so its next turn finds it). Metrics (latency, time to first token, tokens) and the audit line are written
here for every generation, cached or not; the in-flight gauge ends with the request (`ctx.end`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from deployments.gateway import sse
from deployments.gateway.audit import AuditLog
from deployments.gateway.auth.quotas import Quotas
from deployments.gateway.context import JsonAnswer, RequestContext, StreamAnswer
from deployments.gateway.pii import is_sensitive
from deployments.gateway.protocol import APIError, ChatRequest
from deployments.gateway.stages.conversation import Conversation
from deployments.metrics import MetricsRecorder

log = logging.getLogger("raychat.gateway")
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Record:
    def __init__(
        self,
        conversation: Conversation,
        metrics: MetricsRecorder,
        audit: AuditLog,
        model_id: str,
        replica: str,
        quotas: Quotas,
    ) -> None:
        self.quotas = quotas
        self._charging: set[asyncio.Task[None]] = set()
        self.conversation = conversation
        self.metrics = metrics
        self.audit = audit
        self.model_id = model_id
        self.replica = replica

    async def respond(self, ctx: RequestContext) -> Response:
        answer = ctx.answer
        headers = {**ctx.turn.headers(), "X-Raychat-Replica": self.replica}
        if isinstance(answer, StreamAnswer):
            ctx.http.state.audited = True  # written when the stream ends
            return StreamingResponse(
                self._relay(ctx, answer),
                media_type="text/event-stream",
                headers={**STREAM_HEADERS, **headers},
            )
        assert isinstance(answer, JsonAnswer), "a stage before record sets the answer"
        text = answer_text(answer.body)
        await self.conversation.finish(ctx.turn, text, {"kind": "json", "body": answer.body})
        usage = answer.body.get("usage") or {}
        self._write(ctx, text, int(usage.get("total_tokens", 0)), usage)
        ctx.end()
        return JSONResponse(answer.body, headers=headers)

    async def _relay(self, ctx: RequestContext, answer: StreamAnswer) -> AsyncIterator[str]:
        summary = sse.StreamSummary()
        finished = False
        try:
            if ctx.turn.cached is None:
                self.metrics.observe(
                    "raychat_time_to_first_token_seconds",
                    (self.model_id, ctx.path),
                    time.perf_counter() - ctx.started,
                )
            async for events in _chain(answer.first, answer.rest):
                summary.add(events)
                if summary.done and not finished:
                    # Save the turn before the client sees the end: its next turn must find it.
                    entry = (
                        {"kind": "sse", "events": sse.to_wire(summary.events)} if summary.complete() else None
                    )
                    await self.conversation.finish(ctx.turn, summary.answer(), entry)
                    finished = True
                yield sse.to_wire(events)
        except Exception as exc:  # the stream is already open: report in-band, then close it
            log.exception("stream failed")
            error = APIError(500, f"generation failed: {type(exc).__name__}", code="stream_error")
            yield sse.to_wire([sse.event(error.body()), sse.DONE])
        finally:
            ctx.end()
            if not finished and ctx.turn.session_id is not None:
                log.info("stream for session %s ended early; the turn is not saved", ctx.turn.session_id)
            self._write(ctx, summary.answer(), summary.tokens(), summary.usage())

    def _write(self, ctx: RequestContext, answer: str, tokens: int, usage: dict[str, Any]) -> None:
        """Latency and token metrics, and the audit line, for one finished generation."""
        labels = (self.model_id, ctx.path)
        self.metrics.observe("model_inference_latency_seconds", labels, time.perf_counter() - ctx.started)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or max(tokens - prompt_tokens, 0))
        self.metrics.inc("raychat_tokens", (self.model_id, "prompt"), prompt_tokens)
        self.metrics.inc("raychat_tokens", (self.model_id, "completion"), completion_tokens)
        ctx.http.state.audited = True
        self._charge(ctx, tokens)
        request = ctx.to_engine()
        self.audit.record(
            trace_id=ctx.http.state.trace_id,
            user=ctx.caller.audit_user(request.user),
            endpoint=ctx.path,
            model=self.model_id,
            tokens=tokens,
            sensitive=is_sensitive(prompt_text(request), answer),
        )

    def _charge(self, ctx: RequestContext, tokens: int) -> None:
        """The tokens go against the caller's quota in the background: a stream's end (or its client's
        disconnect) must not wait on Redis."""
        identity = ctx.caller.identity
        if identity.kind == "anonymous" or tokens <= 0:
            return
        task = asyncio.ensure_future(self.quotas.charge(identity, tokens))
        self._charging.add(task)
        task.add_done_callback(self._charging.discard)


async def _chain(
    first: list[sse.Event], rest: AsyncIterator[list[sse.Event]]
) -> AsyncIterator[list[sse.Event]]:
    yield first
    async for events in rest:
        yield events


def prompt_text(request: Any) -> str:
    """Every text the engine was given: messages (history and retrieved context included) or prompt."""
    if isinstance(request, ChatRequest):
        return "\n".join(m.text() for m in request.messages)
    prompt = request.prompt
    return prompt if isinstance(prompt, str) else "\n".join(p for p in prompt if isinstance(p, str))


def answer_text(response: dict[str, Any]) -> str:
    texts = []
    for choice in response.get("choices", []):
        message = choice.get("message") or {}
        texts.append(message.get("content") or choice.get("text") or "")
    return "".join(texts)
