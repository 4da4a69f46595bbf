"""`/v1/chat/completions` and `/v1/completions`: the whole path is the pipeline (`pipeline.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from deployments.gateway import services
from deployments.gateway.context import RequestContext
from deployments.gateway.protocol import ChatRequest, Completion, CompletionRequest
from deployments.gateway.routes import ERRORS, json_body

router = APIRouter()
_RESPONSES = {
    200: {"model": Completion, "description": "the answer, or its stream as text/event-stream"},
    **ERRORS,
}


@router.post("/v1/chat/completions", openapi_extra=json_body(ChatRequest), responses=_RESPONSES)
async def chat_completions(request: Request) -> Response:
    return await services.of(request).pipeline.run(RequestContext("chat", request))


@router.post("/v1/completions", openapi_extra=json_body(CompletionRequest), responses=_RESPONSES)
async def completions(request: Request) -> Response:
    return await services.of(request).pipeline.run(RequestContext("completions", request))
