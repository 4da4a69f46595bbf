"""The rerank stage (`knowledge.reranker_model`): a sentence-transformers `CrossEncoder` reads the question
and each candidate passage together and orders the candidates by its score.

Search modes rank passages by vectors or words matched separately from the question; on the English
evaluation most misses had the right document in the top 10 with the wrong passage first, which is what
a cross-encoder corrects. Search takes `knowledge.rerank_depth` candidates from its mode, this orders
them and keeps `top_k`. Used only when a reranker model (a local directory) is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from knowledge.config import KnowledgeSettings
from knowledge.search import Hit


class Reranker:
    def __init__(self, model_dir: str, *, depth: int = 20, threads: int = 1, batch_size: int = 32) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"knowledge.reranker_model={model_dir!r}: no such directory")
        torch.set_num_threads(threads)
        self.model = CrossEncoder(str(path), device="cpu", local_files_only=True)
        self.depth = depth
        self.batch_size = batch_size
        self.name = path.name

    @classmethod
    def from_settings(cls, cfg: KnowledgeSettings) -> Reranker | None:
        if cfg.reranker_model is None:
            return None
        return cls(cfg.reranker_model, depth=cfg.rerank_depth, threads=cfg.embedding_threads)

    def candidates(self, top_k: int) -> int:
        """How many hits to ask the search mode for."""
        return max(top_k, self.depth)

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        """`hits` ordered by the cross-encoder's score (which becomes their score), the best `top_k`."""
        if not hits:
            return []
        scores = self.model.predict(
            [(query, hit.text) for hit in hits], batch_size=self.batch_size, show_progress_bar=False
        )
        ranked = sorted(zip(scores, range(len(hits)), strict=True), key=lambda pair: -float(pair[0]))
        return [replace(hits[i], score=float(score)) for score, i in ranked[:top_k]]


def search(
    store: Any, reranker: Reranker | None, name: str, *, query: str, top_k: int, **options: Any
) -> list[Hit]:
    """`store.search`, with the rerank stage when there is a reranker: its candidates, reordered, cut to
    `top_k`. The one path the Retriever and the retrieval benchmark take."""
    if reranker is None:
        return list(store.search(name, query=query, top_k=top_k, **options))
    hits = store.search(name, query=query, top_k=reranker.candidates(top_k), **options)
    return reranker.rerank(query, hits, top_k)
