"""What the API answers with, as the OpenAPI document publishes it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.gateway.protocol.requests import Frozen


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


class IngestionJob(BaseModel):
    """An upload sent with `wait=false`: answered at once with this, then followed with GET on its URL."""

    id: str
    object: Literal["knowledge_base.ingestion_job"] = "knowledge_base.ingestion_job"
    knowledge_base: str
    status: Literal["running", "completed", "failed", "lost"]
    files: int = 0
    done: int = 0
    ingested: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks: int = 0
    chunks_per_s: float = 0.0
    created_at: float
    updated_at: float
    finished_at: float | None = None
    error: str | None = None
    results: list[UploadResult] | None = None  # every file's outcome, once finished


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
    version: str = Field("", description="the model's version: a digest of its weights and engine options")
    alias_of: str | None = Field(None, description="for an alias: the model it serves")


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
