"""The gateway's HTTP routes, thin: each hands the request to a service or the pipeline.

Routes read their bodies themselves (size limit, OpenAI-format errors), so FastAPI cannot infer the body
schemas; `json_body` declares them for the published OpenAPI document from the protocol's models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from deployments.gateway.protocol import ErrorResponse

BODY_MODELS: list[type[BaseModel]] = []


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model`."""
    if model not in BODY_MODELS:
        BODY_MODELS.append(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "bad input, naming the parameter",
        404: "no such model, knowledge base, document or session",
        413: "body too large",
        503: "a dependency is unavailable or at capacity; retry after Retry-After",
    }.items()
}
