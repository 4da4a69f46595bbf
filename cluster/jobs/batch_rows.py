"""The rows of a batch-chat job: parse and check each input line, format each output line
(`batch_stream` reads the input in chunks, resumes from the output and appends to it).

No Ray here, so the driver and the unit tests share it. Input lines follow OpenAI's batch format,
`{"custom_id", "method"?, "url"?, "body": {"messages", ...sampling}}`; every input row ends as exactly one
output line, `{"custom_id", "response"}` or `{"custom_id", "error"}`, so no row disappears silently.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployments.gateway.protocol import RANGES, SEARCH_MODES, TEXT_ROLES, APIError, check_range
from knowledge import prompt

# The gateway's own vocabulary (its Ray-free protocol module): a row is checked as a request would be.
ROLES = TEXT_ROLES
_FLOATS = [name for name, spec in RANGES.items() if not spec.integer]
_SAMPLING = {*_FLOATS, "max_tokens", "max_completion_tokens", "seed", "stop", "top_k"}
_IGNORED = {"model", "n", "stream", "stream_options", "user", "metadata", "store"}
_RAG_ONLY = {"search_mode"}


class RowError(ValueError):
    def __init__(self, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class ChatRow:
    line: int
    custom_id: str
    messages: list[dict[str, str]]
    # The same keys on every row: Ray Data stores the column as one Arrow struct, and a key missing on
    # some rows would reach vLLM's SamplingParams as None.
    sampling: dict[str, Any]
    top_k: int | None = None  # with a knowledge base: the retrieval depth, as in the gateway
    search_mode: str | None = None

    @property
    def question(self) -> str:
        return prompt.question(self.messages)


@dataclass(frozen=True)
class BadRow:
    line: int
    custom_id: str
    message: str
    code: str

    def record(self) -> dict[str, Any]:
        return error_record(self.custom_id, self.message, "invalid_request_error", self.code)


Row = ChatRow | BadRow


def error_record(custom_id: str, message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"custom_id": custom_id, "error": {"message": message, "type": type_, "code": code}}


def _float(name: str, value: Any) -> float:
    try:
        check_range(name, value)
    except APIError as exc:
        raise RowError(exc.message, exc.code or "invalid_value") from exc
    return float(value)


def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowError(f"'{name}' must be an integer, got {json.dumps(value)}", "invalid_type")
    if value < low or (high is not None and value > high):
        raise RowError(f"'{name}' must be in [{low}, {high if high is not None else 'inf'}], got {value}")
    return value


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    # OpenAI's list-of-parts form: text parts only, joined as vLLM's "string" content format does.
    if isinstance(value, list) and value and all(_is_text_part(p) for p in value):
        return "\n".join(p["text"] for p in value)
    raise RowError(f"{where}.content must be a string or a list of text parts", "invalid_type")


def parse_messages(value: Any, *, rag: bool = False) -> list[dict[str, str]]:
    if value is None:
        raise RowError("'messages' is required", "missing_required_parameter")
    if not isinstance(value, list):
        raise RowError("'messages' must be an array", "invalid_type")
    if not value:
        raise RowError("'messages' must contain at least one message", "empty_array")
    messages: list[dict[str, str]] = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowError(f"messages[{i}] must be an object", "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise RowError(f"messages[{i}].role {json.dumps(role)} is not one of {list(ROLES)}")
        # Only role and content: the template needs no more, and other keys (name, ...) are dropped.
        messages.append({"role": role, "content": _content(message.get("content"), f"messages[{i}]")})
    if rag and not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise RowError("a knowledge-base chat needs a user message with text content")
    return messages


Params = tuple[dict[str, Any], int | None, str | None]


def parse_sampling(body: Mapping[str, Any], *, model_id: str, rag: bool) -> Params:
    """(sampling params for vLLM, retrieval top_k, search mode); unknown keys are errors, not ignored."""
    allowed = {"messages"} | _SAMPLING | _IGNORED | (_RAG_ONLY if rag else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RowError(f"unsupported in a batch row: {', '.join(unknown)}", "unsupported_parameter")
    model = body.get("model")
    if model is not None and model != model_id:
        raise RowError(f"The model '{model}' does not exist. Available: {model_id}", "model_not_found")
    if body.get("n") is not None and (isinstance(body["n"], bool) or body["n"] != 1):
        raise RowError("only 'n': 1 is supported in a batch row", "unsupported_parameter")
    sampling: dict[str, Any] = {"max_tokens": None}
    for name in ("max_tokens", "max_completion_tokens"):  # the newer name wins when both are given
        if body.get(name) is not None:
            sampling["max_tokens"] = _int(name, body[name], 1)
    for name in _FLOATS:
        value = body.get(name)
        sampling[name] = RANGES[name].default if value is None else _float(name, value)
    top_k = body.get("top_k")
    sampling["top_k"] = 0 if rag or top_k is None else _int("top_k", top_k, -1)
    seed = body.get("seed")
    sampling["seed"] = None if seed is None else _int("seed", seed, -(2**63), 2**63 - 1)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise RowError("'stop' must be a string or an array of strings", "invalid_type")
    sampling["stop"] = stop or None
    retrieval_k = _int("top_k", top_k, 1, 100) if rag and top_k is not None else None
    mode = body.get("search_mode")
    if mode is not None and mode not in SEARCH_MODES:
        raise RowError(f"'search_mode' must be one of {', '.join(SEARCH_MODES)}")
    return sampling, retrieval_k, mode


def parse_line(text: str, line: int, *, model_id: str, rag: bool = False) -> Row:
    fallback_id = f"line-{line}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadRow(line, fallback_id, f"line {line} is not valid JSON: {exc}", "invalid_json")
    if not isinstance(obj, dict):
        return BadRow(line, fallback_id, f"line {line} must be a JSON object", "invalid_json")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BadRow(line, fallback_id, "'custom_id' must be a non-empty string", "invalid_custom_id")
    try:
        body = obj.get("body")
        if not isinstance(body, dict):
            raise RowError("'body' must be an object", "invalid_type")
        messages = parse_messages(body.get("messages"), rag=rag)
        sampling, top_k, mode = parse_sampling(body, model_id=model_id, rag=rag)
    except RowError as exc:
        return BadRow(line, custom_id, exc.message, exc.code)
    return ChatRow(line, custom_id, messages, sampling, top_k, mode)


def context_error(prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> str | None:
    """vLLM's OpenAI-server check (the Serve app answers it with 400 context_length_exceeded)."""
    completion = max_tokens or 0
    requested = prompt_tokens + completion
    if prompt_tokens < max_model_len and requested <= max_model_len:
        return None
    return (
        f"This model's maximum context length is {max_model_len} tokens. However, you requested "
        f"{requested} tokens ({prompt_tokens} in the messages, {completion} in the completion). "
        "Please reduce the length of the messages or completion."
    )


def engine_item(row: ChatRow, prompt_token_ids: list[int]) -> dict[str, Any]:
    """The dataset row for Ray Data's vLLM stage: the prompt comes already templated and tokenized."""
    return {
        "custom_id": row.custom_id,
        "tokenized_prompt": prompt_token_ids,
        "sampling_params": dict(row.sampling),
    }


def finish_reason(completion: int, prompt: int, max_tokens: int | None, max_model_len: int) -> str:
    # Ray Data's vLLM stage does not pass vLLM's finish_reason on; using up the token budget is "length".
    budget = max_tokens if max_tokens is not None else max_model_len - prompt
    return "length" if completion >= budget else "stop"


def engine_record(
    row: ChatRow,
    output: Mapping[str, Any],
    *,
    model_id: str,
    max_model_len: int,
    sources: list[dict[str, Any]] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    error = str(output.get("__inference_error__") or "")
    if error:
        if "context length" in error or "maximum model length" in error:
            return error_record(row.custom_id, error, "invalid_request_error", "context_length_exceeded")
        return error_record(row.custom_id, error, "server_error", "inference_failed")
    prompt = int(output.get("num_input_tokens") or 0)
    completion = int(output.get("num_generated_tokens") or 0)
    message = {"role": "assistant", "content": str(output.get("generated_text") or "")}
    reason = finish_reason(completion, prompt, row.sampling.get("max_tokens"), max_model_len)
    response: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model_id,
        "choices": [{"index": 0, "message": message, "finish_reason": reason}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    if sources is not None:
        response["sources"] = sources
    return {"custom_id": row.custom_id, "response": response}
