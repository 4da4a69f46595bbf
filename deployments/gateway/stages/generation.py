"""Stage 5, generation: the engine request to the LLM deployment, and its answer as a body or events.

A request whose LLM replica is lost before the first item arrives is sent again (nothing has reached the
client yet, and Serve's router has dropped the dead replica); a stream that already started cannot be
replayed and reports the loss in-band instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest
from vllm.exceptions import VLLMClientError

from deployments.gateway import sse
from deployments.gateway.context import JsonAnswer, RequestContext, StreamAnswer
from deployments.gateway.errors import from_engine_error
from deployments.gateway.protocol import APIError, from_validation_error
from deployments.metrics import MetricsRecorder

log = logging.getLogger("raychat.gateway")
# The vLLM protocol object and the LLM deployment's method for each endpoint.
_ENGINE = {"chat": (ChatCompletionRequest, "chat"), "completions": (CompletionRequest, "completions")}


class Generation:
    def __init__(self, llm: DeploymentHandle, metrics: MetricsRecorder, model_id: str, retries: int) -> None:
        self.llm = llm
        self.metrics = metrics
        self.model_id = model_id
        self.retries = retries

    async def __call__(self, ctx: RequestContext) -> None:
        protocol_type, method = _ENGINE[ctx.endpoint]
        try:
            request = protocol_type.model_validate(ctx.to_engine().engine_body())
        except ValidationError as exc:  # what vLLM's protocol checks beyond ours
            raise from_validation_error(exc) from exc
        except VLLMClientError as exc:  # vLLM's own request checks (an empty prompt, ...)
            param = getattr(exc, "parameter", None)
            raise APIError(400, str(exc), param=param, code="invalid_value") from exc
        self.metrics.gauge_add("concurrent_session_count", 1)
        ctx.on_end(lambda: self.metrics.gauge_add("concurrent_session_count", -1))
        handle = getattr(self.llm.options(stream=True), method)
        try:
            first, rest = await open_stream(
                lambda: handle.remote(request),
                self.retries,
                on_retry=lambda: self.metrics.inc("raychat_llm_replica_retries", (self.model_id,)),
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
        if not request.stream:
            if is_engine_error(first):
                raise from_engine_error(first)
            body = first.model_dump(mode="json", exclude_none=True)
            if ctx.sources is not None:
                body["sources"] = ctx.sources
            ctx.answer = JsonAnswer(body)
            return
        if isinstance(first, list) and first and is_engine_error(first[0]):
            raise from_engine_error(first[0])
        events = engine_events(first)
        if ctx.sources is not None:
            events = sse.with_sources(events, ctx.sources)
        ctx.answer = StreamAnswer(first=events, rest=_events(rest))


def is_engine_error(item: Any) -> bool:
    return type(item).__name__ == "ErrorResponse" or (hasattr(item, "error") and not hasattr(item, "choices"))


def engine_events(batch: Any) -> list[sse.Event]:
    """One streamed item of the LLM deployment (a list of SSE strings, or an error object) as events."""
    items = batch if isinstance(batch, list) else [batch]
    events: list[sse.Event] = []
    for item in items:
        if isinstance(item, str):
            events += sse.parse(item)
        else:
            events.append(sse.event(from_engine_error(item).body()))
    return events


async def _events(batches: AsyncIterator[Any]) -> AsyncIterator[list[sse.Event]]:
    async for batch in batches:
        yield engine_events(batch)


def replica_lost(exc: BaseException) -> bool:
    """The LLM replica died or became unreachable (its node was lost, its process crashed)."""
    return isinstance(exc, RayActorError) or (
        isinstance(exc, RayTaskError) and isinstance(getattr(exc, "cause", None), RayActorError)
    )


async def open_stream(
    start: Callable[[], AsyncIterator[Any]], retries: int, on_retry: Callable[[], None] = lambda: None
) -> tuple[Any, AsyncIterator[Any]]:
    """Start a streamed engine call and wait for its first item, sending it again if the replica was
    lost before that item."""
    for attempt in range(retries + 1):
        responses = start()
        try:
            return await responses.__anext__(), responses
        except Exception as exc:
            if not replica_lost(exc):
                raise
            log.warning("LLM replica lost before answering (%s); attempt %d", type(exc).__name__, attempt + 1)
            if attempt < retries:
                on_retry()
    raise APIError(
        503,
        "the LLM replica serving this request was lost; retry shortly",
        code="replica_unavailable",
        headers={"Retry-After": "1"},
    )
