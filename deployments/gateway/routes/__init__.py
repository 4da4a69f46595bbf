"""The gateway's HTTP routes, thin: each hands the request to a service or the pipeline.

Routes read their bodies themselves (size limit, OpenAI-format errors), so FastAPI cannot infer the body
schemas; `json_body` declares them for the published OpenAPI document from the protocol's models.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel

from deployments.gateway.protocol import APIError, ErrorResponse
from deployments.gateway.redis_state import RedisUnavailable

T = TypeVar("T")

BODY_MODELS: list[type[BaseModel]] = []


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model`."""
    if model not in BODY_MODELS:
        BODY_MODELS.append(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def multipart_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is multipart/form-data with these fields."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def redis_backed(call: Awaitable[T], what: str, code: str) -> T:
    """`call`, or a 503 with Retry-After when Redis (which holds `what`) cannot be reached."""
    try:
        return await call
    except RedisUnavailable as exc:
        raise APIError(
            503, f"the {what} is unavailable; retry shortly", code=code, headers={"Retry-After": "2"}
        ) from exc


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "bad input, naming the parameter",
        404: "no such model, knowledge base, document or session",
        413: "body too large",
        503: "a dependency is unavailable or at capacity; retry after Retry-After",
    }.items()
}
