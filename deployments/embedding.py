"""The Embedding deployment: sentence-transformers behind @serve.batch dynamic batching.

Callers send lists of texts; each text joins a shared batch queue, so many small requests from many
callers become one model call of up to `embedding_max_batch_size` texts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from knowledge.config import KnowledgeSettings
from knowledge.embedder import Embedder


@serve.deployment(name="Embedding")
class EmbeddingDeployment:
    def __init__(self, settings: dict[str, Any]) -> None:
        cfg = KnowledgeSettings.model_validate(settings)
        self._embedder = Embedder.from_settings(cfg)
        self._batched.set_max_batch_size(cfg.embedding_max_batch_size)
        self._batched.set_batch_wait_timeout_s(cfg.embedding_batch_wait_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01)
    async def _batched(self, texts: list[str]) -> list[list[float]]:
        # The model call blocks; run it off the event loop so new requests keep joining the next batch.
        return await asyncio.to_thread(self._embedder.embed, texts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return list(await asyncio.gather(*(self._batched(t) for t in texts)))

    async def count_tokens(self, texts: list[str]) -> int:
        return await asyncio.to_thread(self._embedder.count_tokens, texts)

    async def info(self) -> dict[str, Any]:
        return {"model": self._embedder.name, "dim": self._embedder.dim}
