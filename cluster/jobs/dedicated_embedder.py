"""An ingestion job's own embedder: the knowledge settings' model in a Ray actor of the job, so that a large
ingestion leaves the Embedding deployment to the queries of online users. Writes still go through the
Retriever deployment (the one writer of the knowledge store)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import ray

from cluster.settings import RaychatSettings


@ray.remote
class DedicatedEmbedder:
    def __init__(self, knowledge: dict[str, Any], threads: int) -> None:
        from knowledge.config import KnowledgeSettings
        from knowledge.embedder import Embedder

        self._embedder = Embedder.from_settings(KnowledgeSettings.model_validate(knowledge), threads=threads)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed(texts)


def start(settings: RaychatSettings) -> tuple[Any, Callable[[list[str]], Awaitable[list[list[float]]]]]:
    """The actor (end it with `ray.kill`) and an `embed(texts)` for the ingestion pipeline."""
    cpus = settings.batch.dedicated_embedder_num_cpus
    actor = DedicatedEmbedder.options(num_cpus=cpus).remote(
        settings.knowledge.model_dump(mode="json"), max(1, int(cpus))
    )

    async def embed(texts: list[str]) -> list[list[float]]:
        return await actor.embed.remote(texts)

    return actor, embed
