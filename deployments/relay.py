"""Bodies in, engine output out: the request-size guard and the SSE relay helpers of the gateway."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from ray.exceptions import RayActorError, RayTaskError

from deployments.errors import APIError, from_engine_error

log = logging.getLogger("raychat.gateway")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")


def is_engine_error(item: Any) -> bool:
    return type(item).__name__ == "ErrorResponse" or (hasattr(item, "error") and not hasattr(item, "choices"))


def join_batch(batch: Any) -> str:
    if isinstance(batch, list):
        return "".join(item if isinstance(item, str) else _error_event(item) for item in batch)
    return batch if isinstance(batch, str) else _error_event(batch)


def _error_event(error: Any) -> str:
    return f"data: {json.dumps(from_engine_error(error).body())}\n\n"


def with_sources(batch: Any, sources: list[dict[str, Any]]) -> list[Any]:
    """Put `sources` into the first SSE event of a stream (OpenAI clients keep unknown chunk fields)."""
    items = list(batch) if isinstance(batch, list) else [batch]
    if items and isinstance(items[0], str) and items[0].startswith("data: {"):
        event = json.loads(items[0][len("data: ") :])
        event["sources"] = sources
        items[0] = f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
    return items


def replica_lost(exc: BaseException) -> bool:
    """The LLM replica died or became unreachable (its node was lost, its process crashed)."""
    return isinstance(exc, RayActorError) or (
        isinstance(exc, RayTaskError) and isinstance(getattr(exc, "cause", None), RayActorError)
    )


async def open_stream(
    start: Callable[[], AsyncIterator[Any]], retries: int, on_retry: Callable[[], None] = lambda: None
) -> tuple[Any, AsyncIterator[Any]]:
    """Start a streamed engine call and wait for its first item.

    If the replica is lost before that item, nothing has reached the client yet, so the call is sent
    again: Serve's router has dropped the dead replica and picks a live one. A stream that already
    started cannot be replayed and reports the loss in-band instead.
    """
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
