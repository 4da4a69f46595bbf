"""Plain JSON in, a typed request (or an APIError naming the parameter) out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from deployments.gateway.protocol.errors import APIError, bad_request
from deployments.gateway.protocol.requests import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    KnowledgeBaseCreate,
    SearchRequest,
)
from deployments.gateway.protocol.values import (
    ROLES,
    check_kb_name,
    check_ranges,
    check_session_id,
    from_validation_error,
)
from knowledge.config import SEARCH_MODES


# --- the parsers: plain JSON in, a typed request (or an APIError naming the parameter) out -----------
def _check_model(body: Mapping[str, Any], served_model: str, aliases: Sequence[str] = ()) -> str:
    """The served model's name; an alias (a name the model had before an upgrade) resolves to it."""
    model = body.get("model")
    if model is None:
        return served_model
    if not isinstance(model, str):
        raise bad_request("'model' must be a string", "model", "invalid_type")
    if model != served_model and model not in aliases:
        raise APIError(
            404,
            f"The model '{model}' does not exist. Available: {', '.join([served_model, *aliases])}",
            param="model",
            code="model_not_found",
        )
    return served_model


def check_messages(messages: Any) -> None:
    if messages is None:
        raise bad_request("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise bad_request("'messages' must be an array", "messages", "invalid_type")
    if not messages:
        raise bad_request("'messages' must contain at least one message", "messages", "empty_array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object", f"messages[{i}]", "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(
                f"messages[{i}].role {json.dumps(role)} is not one of {sorted(ROLES)}",
                f"messages[{i}].role",
            )


def _check_extensions(body: Mapping[str, Any], *, chat: bool) -> None:
    cache = body.get("cache")
    if cache is not None and not isinstance(cache, bool):
        raise APIError(400, "'cache' must be a boolean", param="cache", code="invalid_type")
    if body.get("session_id") is not None:
        if not chat:
            raise APIError(
                400, "sessions apply to /v1/chat/completions", param="session_id", code="invalid_value"
            )
        check_session_id(body["session_id"])
    if not chat:
        return
    if "knowledge_base" in body:
        check_kb_name(body["knowledge_base"], "knowledge_base")
        top_k = body.get("top_k")
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100
        ):
            raise APIError(400, "'top_k' must be an integer in [1, 100]", param="top_k", code="invalid_value")
    mode = body.get("search_mode")
    if mode is not None and mode not in SEARCH_MODES:
        raise APIError(
            400,
            f"'search_mode' must be one of {', '.join(SEARCH_MODES)}",
            param="search_mode",
            code="invalid_value",
        )


def _validate(model: type[BaseModel], body: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def chat_request(
    body: Mapping[str, Any],
    served_model: str,
    *,
    session_header: str | None = None,
    aliases: Sequence[str] = (),
) -> ChatRequest:
    """A chat body as a ChatRequest; the `X-Session-ID` header stands in for a missing `session_id`."""
    fields = dict(body)
    fields["model"] = _check_model(body, served_model, aliases)
    check_messages(body.get("messages"))
    if fields.get("session_id") is None and session_header is not None:
        fields["session_id"] = session_header
    _check_extensions(fields, chat=True)
    check_ranges(body)
    return _validate(ChatRequest, fields)


def check_prompt(prompt: Any) -> None:
    if prompt is None:
        raise bad_request("'prompt' is required", "prompt", "missing_required_parameter")
    if isinstance(prompt, str):
        return
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(p, str | int) and not isinstance(p, bool) for p in prompt)
    ):
        return
    raise bad_request("'prompt' must be a string or a non-empty array of strings", "prompt", "invalid_type")


def completion_request(
    body: Mapping[str, Any],
    served_model: str,
    *,
    session_header: str | None = None,
    aliases: Sequence[str] = (),
) -> CompletionRequest:
    fields = dict(body)
    fields["model"] = _check_model(body, served_model, aliases)
    if fields.get("session_id") is None and session_header is not None:
        fields["session_id"] = session_header
    _check_extensions(fields, chat=False)
    check_prompt(body.get("prompt"))
    check_ranges(body)
    fields.pop("session_id", None)
    return _validate(CompletionRequest, fields)


def embedding_request(body: Mapping[str, Any], served_model: str) -> EmbeddingRequest:
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise bad_request("'input' must be a non-empty string or array of non-empty strings", "input")
    model = body.get("model") or served_model
    if model != served_model:
        raise APIError(
            404,
            f"The embedding model '{model}' does not exist. Available: {served_model}",
            param="model",
            code="model_not_found",
        )
    return _validate(EmbeddingRequest, {**body, "model": served_model})


def knowledge_base_create(body: Mapping[str, Any]) -> KnowledgeBaseCreate:
    name = check_kb_name(body.get("name"))
    description = body.get("description") or ""
    folder = body.get("source_folder")
    if not isinstance(description, str) or (folder is not None and not isinstance(folder, str)):
        raise APIError(400, "'description' and 'source_folder' must be strings", code="invalid_type")
    return KnowledgeBaseCreate(name=name, description=description, source_folder=folder)


def search_request(body: Mapping[str, Any], default_top_k: int) -> SearchRequest:
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise APIError(400, "'query' must be a non-empty string", param="query", code="invalid_value")
    top_k = default_top_k if body.get("top_k") is None else body["top_k"]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise APIError(400, "'top_k' must be an integer in [1, 100]", param="top_k", code="invalid_value")
    mode = body.get("mode") or "hybrid"
    if mode not in SEARCH_MODES:
        raise APIError(
            400, f"'mode' must be one of {', '.join(SEARCH_MODES)}", param="mode", code="invalid_value"
        )
    filters = body.get("filter")
    if filters is not None and not isinstance(filters, dict):
        raise APIError(400, "'filter' must be an object", param="filter", code="invalid_type")
    threshold = body.get("score_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise APIError(
            400, "'score_threshold' must be a number", param="score_threshold", code="invalid_type"
        )
    return SearchRequest(query=query, top_k=top_k, mode=mode, score_threshold=threshold, filter=filters)
