"""The Gateway deployment: FastAPI ingress in front of the LLM deployment.

Each route parses and checks the request itself (so every bad input gets OpenAI's error format), then
calls the LLM deployment through its DeploymentHandle and relays the answer: one JSON body, or the engine's
SSE lines as they come. Later layers (knowledge bases, sessions, cache, auth, audit) hang off this class.
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
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments import validation
from deployments.config import AppConfig
from deployments.errors import APIError, from_engine_error, install_error_handlers

log = logging.getLogger("raychat.gateway")

app = FastAPI(title="raychat", docs_url=None, redoc_url=None)
install_error_handlers(app)


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


def _is_error(item: Any) -> bool:
    return type(item).__name__ == "ErrorResponse" or (hasattr(item, "error") and not hasattr(item, "choices"))


def _join(batch: Any) -> str:
    if isinstance(batch, list):
        return "".join(item if isinstance(item, str) else _error_event(item) for item in batch)
    return batch if isinstance(batch, str) else _error_event(batch)


def _error_event(error: Any) -> str:
    return f"data: {json.dumps(from_engine_error(error).body())}\n\n"


@serve.deployment(name="Gateway")
@serve.ingress(app)
class Gateway:
    def __init__(self, llm: DeploymentHandle, config: dict[str, Any]) -> None:
        self._config = AppConfig.model_validate(config)
        self._llm = llm
        self._model_id = self._config.llm.model_id
        self._created = int(time.time())

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

    # --- generation -------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        body = validation.parse_json_object(await read_body(request, self._config.gateway.max_body_bytes))
        chat = validation.chat_request(body, self._model_id)
        return await self._generate("chat", chat, bool(chat.stream))

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        body = validation.parse_json_object(await read_body(request, self._config.gateway.max_body_bytes))
        completion = validation.completion_request(body, self._model_id)
        return await self._generate("completions", completion, bool(completion.stream))

    async def _generate(self, method: str, request: Any, stream: bool) -> Response:
        responses = getattr(self._llm.options(stream=True), method).remote(request)
        try:
            first = await responses.__anext__()
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
            if _is_error(first):
                raise from_engine_error(first)
            return JSONResponse(first.model_dump(mode="json", exclude_none=True))
        if isinstance(first, list) and first and _is_error(first[0]):
            raise from_engine_error(first[0])
        return StreamingResponse(
            self._relay(first, responses),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _relay(self, first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[str]:
        yield _join(first)
        try:
            async for batch in rest:
                yield _join(batch)
        except Exception as exc:  # the stream is already open: report in-band, then close it
            log.exception("stream failed")
            body = APIError(500, f"generation failed: {type(exc).__name__}", code="stream_error").body()
            yield f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n"
