"""The knowledge layer's section of the settings (splitting, store location, embedding model)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class KnowledgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_size: int = Field(750, ge=50, description="characters per chunk, as Langchain-Chatchat")
    chunk_overlap: int = Field(150, ge=0)
