"""The requests the API takes, as frozen models; raychat's extension fields are declared fields."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.gateway.protocol.values import RANGES, Role
from knowledge.config import SearchMode


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
