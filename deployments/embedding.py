"""The Embedding deployment: the embedding model behind @serve.batch dynamic batching.

Queries (`embed`: search, chat retrieval, /v1/embeddings) join a shared batch queue, so many small requests
from many callers become one model call of up to `embedding_max_batch_size` texts. Ingestion and
re-indexing (`embed_bulk`) go in slices of `embedding_bulk_slice` texts, and a waiting query batch goes
before the next slice (`model_gate.py`): a search during a large ingestion waits for one slice at most.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from deployments.model_gate import ModelGate, Priority
from knowledge.config import KnowledgeSettings
from knowledge.embedder import Embedder


@serve.deployment(name="Embedding")
class EmbeddingDeployment:
    def __init__(self, settings: dict[str, Any]) -> None:
        cfg = KnowledgeSettings.model_validate(settings)
        self._embedder = Embedder.from_settings(cfg)
        self._gate = ModelGate()
        self._slice = cfg.embedding_bulk_slice
        self._batched.set_max_batch_size(cfg.embedding_max_batch_size)
        self._batched.set_batch_wait_timeout_s(cfg.embedding_batch_wait_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01)
    async def _batched(self, texts: list[str]) -> list[list[float]]:
        # The model call runs off the event loop, so new requests keep joining the next batch.
        return await self._gate.run(Priority.QUERY, self._embedder.embed, texts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return list(await asyncio.gather(*(self._batched(t) for t in texts)))

    async def embed_bulk(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._slice):
            piece = texts[start : start + self._slice]
            vectors += await self._gate.run(Priority.BULK, self._embedder.embed, piece)
        return vectors

    async def count_tokens(self, texts: list[str]) -> int:
        # Its own tokenizer instance (`Embedder.count_tokens`): not gated, never waits for a model call.
        return await asyncio.to_thread(self._embedder.count_tokens, texts)

    async def info(self) -> dict[str, Any]:
        return {
            "model": self._embedder.name,
            "dim": self._embedder.dim,
            "calls": {p.name.lower(): n for p, n in self._gate.calls.items()},
        }
