"""The API's requests, responses and errors as typed models: the one definition of what raychat accepts.

Ray-free and FastAPI-free (an import-linter contract keeps it so): the gateway parses every body here
once, at the edge, and the batch jobs and the Locust suite import the same roles, ranges and search
modes. Parsed requests are frozen; a stage that needs a different request builds a new one.

Checks run in the order a person fixing a request would want them: the JSON itself (surrogates, depth,
numbers JSON cannot carry), then the model, the messages, raychat's extension fields and the documented
ranges, each error naming its parameter; the models' own validation comes last.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from knowledge.config import SEARCH_MODES, SearchMode
from knowledge.errors import InvalidName
from knowledge.names import check_name

# --- errors ----------------------------------------------------------------------------------------
# OpenAI's error types by HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error the client is told about, with the HTTP status it deserves."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


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


# --- requests ----------------------------------------------------------------------------------------
class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ChatMessage(Frozen):
    """One message; other keys (name, tool_calls, ...) travel on to the engine unchanged."""

    model_config = ConfigDict(frozen=True, extra="allow")
    role: Role
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "\n".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict))
        return ""


def _ranged(name: str, kind: type, description: str) -> Any:
    spec = RANGES[name]
    bounds: dict[str, float] = {}
    if spec.low is not None:
        bounds["ge" if spec.low_inclusive else "gt"] = spec.low
    if spec.high is not None:
        bounds["le"] = spec.high
    return Annotated[kind | None, Field(description=description, **bounds)]


Temperature = _ranged("temperature", float, "sampling temperature")
TopP = _ranged("top_p", float, "nucleus sampling mass")
PresencePenalty = _ranged("presence_penalty", float, "presence penalty")
FrequencyPenalty = _ranged("frequency_penalty", float, "frequency penalty")
MaxTokens = _ranged("max_tokens", int, "most tokens to generate")
MaxCompletionTokens = _ranged("max_completion_tokens", int, "most tokens to generate (newer name)")
N = _ranged("n", int, "answers per request")


class GenerationParams(Frozen):
    """What chat and completions share. Unknown vLLM sampling options pass through to the engine."""

    model_config = ConfigDict(frozen=True, extra="allow")
    model: str = Field(description="the served model's id")
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: Temperature = None
    top_p: TopP = None
    presence_penalty: PresencePenalty = None
    frequency_penalty: FrequencyPenalty = None
    max_tokens: MaxTokens = None
    n: N = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    cache: bool | None = Field(None, description="raychat: use the question cache (default: temperature 0)")

    @property
    def streams(self) -> bool:
        return bool(self.stream)

    def wants_cache(self) -> bool:
        """Explicit `cache: true|false` wins; otherwise only deterministic (temperature 0) requests."""
        if self.cache is not None:
            return self.cache
        return self.temperature == 0


# Fields of ours that the engine must never see.
RAYCHAT_FIELDS = frozenset({"cache", "session_id", "knowledge_base", "search_mode"})


class ChatRequest(GenerationParams):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: MaxCompletionTokens = None
    top_k: int | None = Field(
        None, description="sampling top-k; with a knowledge base, the retrieval depth (1-100)"
    )
    session_id: str | None = Field(None, description="raychat: keep the conversation under this id")
    knowledge_base: str | None = Field(None, description="raychat: answer from this knowledge base")
    search_mode: SearchMode | None = Field(None, description="raychat: retrieval mode with knowledge_base")

    def reserve_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def engine_body(self) -> dict[str, Any]:
        """The body vLLM receives: what the client set, less raychat's fields (and top_k when it was
        the retrieval depth)."""
        drop = set(RAYCHAT_FIELDS)
        if self.knowledge_base is not None:
            drop.add("top_k")
        body = self.model_dump(mode="json", exclude_unset=True, exclude=drop)
        body["model"] = self.model
        body["messages"] = [m.model_dump(mode="json", exclude_unset=True) for m in self.messages]
        return body


class CompletionRequest(GenerationParams):
    prompt: str | list[str | int] = Field(description="text, or an array of texts or token ids")

    def engine_body(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", exclude_unset=True, exclude=set(RAYCHAT_FIELDS))
        body["model"] = self.model
        return body


class EmbeddingRequest(Frozen):
    model_config = ConfigDict(frozen=True, extra="allow")
    input: str | list[str]
    model: str | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class KnowledgeBaseCreate(Frozen):
    name: str
    description: str = ""
    source_folder: str | None = Field(
        None, description="a folder on the server that the knowledge base follows"
    )


class SearchRequest(Frozen):
    query: str
    top_k: int = Field(5, ge=1, le=100)
    mode: SearchMode = "hybrid"
    score_threshold: float | None = None
    filter: dict[str, Any] | None = None


# --- the parsers: plain JSON in, a typed request (or an APIError naming the parameter) out -----------
def _check_model(body: Mapping[str, Any], served_model: str) -> str:
    model = body.get("model")
    if model is None:
        return served_model
    if not isinstance(model, str):
        raise bad_request("'model' must be a string", "model", "invalid_type")
    if model != served_model:
        raise APIError(
            404,
            f"The model '{model}' does not exist. Available: {served_model}",
            param="model",
            code="model_not_found",
        )
    return model


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
    body: Mapping[str, Any], served_model: str, *, session_header: str | None = None
) -> ChatRequest:
    """A chat body as a ChatRequest; the `X-Session-ID` header stands in for a missing `session_id`."""
    fields = dict(body)
    fields["model"] = _check_model(body, served_model)
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
    body: Mapping[str, Any], served_model: str, *, session_header: str | None = None
) -> CompletionRequest:
    fields = dict(body)
    fields["model"] = _check_model(body, served_model)
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


# --- responses (what the OpenAPI schema publishes) ---------------------------------------------------
class Source(Frozen):
    """A passage a knowledge-base answer drew on."""

    document: str
    chunk: int
    score: float
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchHit(Source):
    model_config = ConfigDict(frozen=True, extra="allow")


class ListOf(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]


class SearchResults(ListOf):
    data: list[SearchHit]


class UploadResult(BaseModel):
    document: str
    status: Literal["ingested", "unchanged", "failed"]
    chunks: int = 0
    error: str | None = None


class UploadResults(ListOf):
    data: list[UploadResult]


class KnowledgeBaseInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str = ""
    source_folder: str | None = None


class KnowledgeBaseList(ListOf):
    data: list[KnowledgeBaseInfo]


class Deleted(BaseModel):
    model_config = ConfigDict(extra="allow")
    deleted: bool = True


class Session(BaseModel):
    id: str
    object: Literal["session"] = "session"
    messages: list[dict[str, Any]]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "raychat"
    max_model_len: int


class ModelList(ListOf):
    data: list[ModelCard]


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float]


class EmbeddingResponse(ListOf):
    model: str
    data: list[EmbeddingData]
    usage: dict[str, int]


class Completion(BaseModel):
    """A chat or text completion as vLLM returns it; `sources` is raychat's, on knowledge-base chats."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    sources: list[Source] | None = None
