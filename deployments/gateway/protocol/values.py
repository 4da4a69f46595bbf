"""The vocabulary shared with the batch jobs and load tests (roles, ranges, ids), and the checks on plain
JSON values that run before any model sees the body."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ValidationError

from deployments.gateway.protocol.errors import APIError, bad_request
from knowledge.config import SEARCH_MODES, SearchMode
from knowledge.errors import InvalidName
from knowledge.names import check_name

# --- the vocabulary shared with the batch jobs and load tests ---------------------------------------
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES: tuple[str, ...] = get_args(Role)
TEXT_ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant")  # a plain-text conversation
assert set(SEARCH_MODES) == set(get_args(SearchMode))


class Range(BaseModel):
    """OpenAI's documented bounds of one parameter; `default` is what the engine uses when unset."""

    low: float | None
    high: float | None
    low_inclusive: bool = True
    integer: bool = False
    default: float | None = None

    def text(self) -> str:
        high = self.high if self.high is not None else "inf"
        return f"{'[' if self.low_inclusive else '('}{self.low}, {high}]"


# vLLM leaves these to the engine, where they would surface late or as 500s.
INT_MAX = 2**31 - 1
RANGES: dict[str, Range] = {
    "temperature": Range(low=0.0, high=2.0, default=1.0),
    "top_p": Range(low=0.0, high=1.0, low_inclusive=False, default=1.0),
    "presence_penalty": Range(low=-2.0, high=2.0, default=0.0),
    "frequency_penalty": Range(low=-2.0, high=2.0, default=0.0),
    "max_tokens": Range(low=1, high=INT_MAX, integer=True),
    "max_completion_tokens": Range(low=1, high=INT_MAX, integer=True),
    "n": Range(low=1, high=128, integer=True),
}
SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # fullmatch: a trailing newline is not allowed
MAX_JSON_DEPTH = 64
_INT64 = 2**63


# --- checks on plain JSON values -----------------------------------------------------------------------
def check_range(name: str, value: Any) -> None:
    spec = RANGES[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (spec.integer and not isinstance(value, int))
    ):
        kind = "an integer" if spec.integer else "a number"
        raise bad_request(f"'{name}' must be {kind}, got {json.dumps(value)}", name, "invalid_type")
    low, high = spec.low, spec.high
    too_low = low is not None and (value < low if spec.low_inclusive else value <= low)
    too_high = high is not None and value > high
    if too_low or too_high:
        raise bad_request(f"'{name}' must be in {spec.text()}, got {value}", name)


def check_ranges(body: Mapping[str, Any]) -> None:
    for name in RANGES:
        if body.get(name) is not None:
            check_range(name, body[name])


def check_session_id(value: Any) -> str:
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise APIError(
            400,
            "'session_id' must be 1-128 characters of letters, digits, '_', '-', '.' or ':'",
            param="session_id",
            code="invalid_session_id",
        )
    return value


def check_kb_name(name: Any, param: str = "name") -> str:
    try:
        return check_name(name)
    except InvalidName as exc:
        raise APIError(400, str(exc), param=param, code="invalid_name") from exc


def _check_value(value: Any) -> None:
    """What JSON can say but nothing downstream can hold: lone surrogates (they cannot be encoded as
    UTF-8 for the tokenizer, Redis or the response), non-finite or 64-bit-overflowing numbers, and
    nesting deeper than any real request (iterative, so a hostile depth cannot exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise bad_request(
                f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_json"
            )
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -_INT64 <= item < _INT64:
                raise bad_request("an integer in the body is out of the 64-bit range", code="invalid_value")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise bad_request("numbers must be finite (no NaN or Infinity)", code="invalid_value")
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise bad_request(
            "the body holds a string that is not valid Unicode (a lone surrogate such as \\ud800)",
            code="invalid_encoding",
        ) from exc


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object that every later stage can encode again; 400 for anything else."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"malformed JSON body: {exc}", code="invalid_json") from exc
    except ValueError as exc:  # an integer literal past Python's digit limit
        raise bad_request(f"a number in the body is too large: {exc}", code="invalid_value") from exc
    except RecursionError as exc:
        raise bad_request(
            f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_json"
        ) from exc
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    _check_value(body)
    return body


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def param_path(loc: tuple[object, ...]) -> str | None:
    """`('messages', 0, 'ChatCompletionUserMessageParam', 'content')` -> `messages[0].content`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part[:1].isupper() and part not in ("str", "list", "body"):
            path += f".{part}" if path else part
    return path or None


def from_validation_error(exc: ValidationError) -> APIError:
    first = exc.errors()[0]
    param = param_path(tuple(first.get("loc", ())))
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return bad_request(message, param, "invalid_type")
