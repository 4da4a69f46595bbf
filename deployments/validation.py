"""Request bodies to vLLM's OpenAI protocol objects, with OpenAI-style 400s for what is wrong.

vLLM's pydantic models check types; the range checks OpenAI documents (and vLLM leaves to the engine,
where they would surface late or as 500s) are done here first, naming the offending parameter.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from deployments.errors import APIError, bad_request

KNOWN_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# parameter -> (low, high, low inclusive); None means unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "temperature": (0.0, 2.0, True),
    "top_p": (0.0, 1.0, False),
    "presence_penalty": (-2.0, 2.0, True),
    "frequency_penalty": (-2.0, 2.0, True),
    "max_tokens": (1, None, True),
    "max_completion_tokens": (1, None, True),
    "n": (1, 128, True),
}


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"malformed JSON body: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return body


def check_model(body: dict[str, Any], served_model: str) -> None:
    model = body.get("model")
    if model is None:
        body["model"] = served_model
        return
    if not isinstance(model, str):
        raise bad_request("'model' must be a string", "model", "invalid_type")
    if model != served_model:
        raise APIError(
            404,
            f"The model '{model}' does not exist. Available: {served_model}",
            param="model",
            code="model_not_found",
        )


def check_ranges(body: dict[str, Any]) -> None:
    for name, (low, high, low_inclusive) in _RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        is_int_param = name in {"max_tokens", "max_completion_tokens", "n"}
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (is_int_param and not isinstance(value, int))
        ):
            kind = "an integer" if is_int_param else "a number"
            raise bad_request(f"'{name}' must be {kind}, got {json.dumps(value)}", name, "invalid_type")
        too_low = low is not None and (value < low if low_inclusive else value <= low)
        too_high = high is not None and value > high
        if too_low or too_high:
            bounds = f"{'[' if low_inclusive else '('}{low}, {high if high is not None else 'inf'}]"
            raise bad_request(f"'{name}' must be in {bounds}, got {value}", name)


def check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
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
        if role not in KNOWN_ROLES:
            raise bad_request(
                f"messages[{i}].role {json.dumps(role)} is not one of {sorted(KNOWN_ROLES)}",
                f"messages[{i}].role",
            )


def check_prompt(body: dict[str, Any]) -> None:
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request("'prompt' is required", "prompt", "missing_required_parameter")
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, int)) for p in prompt):
        return
    raise bad_request("'prompt' must be a string or a non-empty array of strings", "prompt", "invalid_type")


def param_path(loc: tuple[object, ...]) -> str | None:
    """`('messages', 0, 'ChatCompletionUserMessageParam', 'content')` -> `messages[0].content`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part[:1].isupper() and part not in ("str", "list", "body"):
            path += f".{part}" if path else part
    return path or None


def _from_pydantic(exc: ValidationError) -> APIError:
    first = exc.errors()[0]
    param = param_path(tuple(first.get("loc", ())))
    return bad_request(
        f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param, "invalid_type"
    )


def chat_request(body: dict[str, Any], served_model: str) -> ChatCompletionRequest:
    check_model(body, served_model)
    check_messages(body)
    check_ranges(body)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _from_pydantic(exc) from exc


def completion_request(body: dict[str, Any], served_model: str) -> CompletionRequest:
    check_model(body, served_model)
    check_prompt(body)
    check_ranges(body)
    try:
        return CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _from_pydantic(exc) from exc
