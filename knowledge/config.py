"""The knowledge layer's section of the settings: splitting, store location, embedding model, search.

Pydantic and the standard library only, importing nothing of `knowledge`: the search modes and index
options live here so that Ray-free callers (the gateway's protocol models, the batch jobs) can name them
without importing LanceDB.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

SearchMode = Literal["vector", "fulltext", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
# What a query is written in, as far as search cares (`knowledge.language.script`).
Script = Literal["latin", "cjk"]
SCRIPTS: tuple[str, ...] = get_args(Script)


class FusionWeights(BaseModel):
    """How much each ranking counts in hybrid search's reciprocal rank fusion; 0 leaves one out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vector: float = Field(1.0, ge=0)
    fulltext: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _one_counts(self) -> FusionWeights:
        if self.vector == 0 and self.fulltext == 0:
            raise ValueError("at least one of vector and fulltext must weigh more than 0")
        return self


# `knowledge.embedding_model` names (`knowledge/embedder.py`, `knowledge/multilingual.py`).
BUNDLED = "bundled"
MULTILINGUAL = "multilingual"
MULTILINGUAL_MODEL_ID = "universal-sentence-encoder-multilingual-3"
# Each model's hybrid fusion weights by script, from make bench-retrieval (see `hybrid_weights`).
BUNDLED_WEIGHTS: dict[Script, FusionWeights] = {"latin": FusionWeights(), "cjk": FusionWeights(vector=0.0)}
MULTILINGUAL_WEIGHTS: dict[Script, FusionWeights] = {
    "latin": FusionWeights(vector=0.0),
    "cjk": FusionWeights(vector=0.0),
}


@dataclass(frozen=True)
class VectorSearchOptions:
    """The ANN index and how hard a query searches it (recall against latency)."""

    index_type: str = "IVF_HNSW_SQ"
    rows_per_partition: int = 20000
    nprobes: int | None = None  # None: LanceDB's default
    ef: int | None = None
    refine_factor: int | None = None


class KnowledgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_size: int = Field(750, ge=50, description="characters per chunk, as Langchain-Chatchat")
    chunk_overlap: int = Field(150, ge=0)
    chunk_context: Literal["none", "heading", "title_heading"] = Field(
        "title_heading",
        description="a line put before each chunk naming where it is: its section's heading path, with "
        "or without the document's title before it (chunks never straddle two sections either way)",
    )
    store_dir: Path | None = Field(
        None,
        description="LanceDB directory; default <data_dir>/knowledge, or <data_dir>/knowledge-<digest> "
        "for another embedding model or dimension (tables of one embedding never mix with another's)",
    )
    source_roots: list[Path] = Field(
        default_factory=lambda: [Path("sources")],
        description="folders knowledge bases may follow (source_folder must lie inside one, symlinks "
        "resolved); relative entries are relative to the data dir; a relative source_folder is taken "
        "relative to the first",
    )
    embedding_model: str = Field(
        "bundled",
        description="'bundled' (all-MiniLM-L6-v2: English), 'multilingual' (USE multilingual v3, 512-d, "
        "reads Chinese: Chinese vector hit@5 0.76 against 0.32; English vector 0.57 against 0.71; 5-8x "
        "faster on this CPU; make bench-retrieval) or a local sentence-transformers model dir",
    )
    embedding_model_id: str = Field(
        "all-MiniLM-L6-v2",
        min_length=1,
        description="name /v1/embeddings serves; default: the model's own name",
    )
    embedding_dimension: int | None = Field(
        None,
        ge=16,
        description="cut every vector to its first N dimensions (sentence-transformers' truncate_dim): "
        "smaller tables and faster search; None: the model's own",
    )
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch",
        description="what runs the embedding model: PyTorch, ONNX Runtime (exported once into "
        "embedding_cache_dir: the same vectors), or ONNX Runtime with int8 weights (vectors differ "
        "slightly: a change to or from it is a new embedding, re-indexed by an upgrade)",
    )
    embedding_cache_dir: Path = Field(
        Path("cache/embedding"), description="exported embedding models; relative to the data dir"
    )
    embedding_threads: int = Field(1, ge=1)
    embedding_max_batch_size: int = Field(64, ge=1, description="@serve.batch max_batch_size")
    embedding_batch_wait_s: float = Field(0.01, ge=0, description="@serve.batch batch_wait_timeout_s")
    embedding_bulk_slice: int = Field(
        32,
        ge=1,
        description="texts per model call for ingestion and re-indexing; a waiting query goes before the "
        "next slice, so a search during an ingestion waits for one slice at most",
    )
    embedding_replicas: int = Field(1, ge=1)
    ingest_parse_tasks: int = Field(4, ge=1, description="files parsed and split at once (Ray tasks)")
    ingest_queue_documents: int = Field(
        64, ge=1, description="parsed documents waiting for the embedder at most (memory bound)"
    )
    ingest_embed_batch: int = Field(256, ge=1, description="texts per call to the Embedding deployment")
    ingest_embed_in_flight: int = Field(
        2, ge=1, description="embedding calls at once: one runs while the next waits, so it never idles"
    )
    ingest_write_chunks: int = Field(
        2000, ge=1, description="chunks written per store commit (new documents of a batch go in together)"
    )
    max_file_bytes: int = Field(50 * 1024 * 1024, ge=1024, description="uploads over this get 413")
    fts_tokenizer: Literal["icu", "ngram", "simple", "whitespace"] = Field(
        "icu",
        description="icu: words in Latin scripts, dictionary segmentation in Chinese and Japanese. Against "
        "ngram (1-3 character grams) on the evaluation (make bench-retrieval): full-text hit@5 0.71 vs 0.68 "
        "in English, 0.96 vs 0.96 in Chinese, and a full-text query at 10k chunks 8 vs 83 ms",
    )
    fts_language: str | None = Field(
        "English",
        description="stemming and stop words of this language for the icu and simple tokenizers (Latin "
        "words; Chinese is unaffected); None: words as written",
    )
    rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    hybrid_weights: dict[Script, FusionWeights] = Field(
        default_factory=lambda: dict(BUNDLED_WEIGHTS),
        description="hybrid search's fusion weights by the query's script (latin, cjk); default: the "
        "embedding model's, measured by make bench-retrieval. The bundled all-MiniLM-L6-v2 does not read "
        "Chinese: on Chinese questions its ranking found the passage in the top 5 for 0.29 of them "
        "against 0.96 for full-text, and fused at equal weights it pulled hybrid down to 0.74, so a CJK "
        "query's hybrid is full-text alone. The multilingual model reads Chinese (vector hit@5 0.76), but "
        "full-text already finds 0.96 and fusing its ranking in lowered hit@1 (0.76 to 0.74 at weight 0.1, "
        "0.66 at 1), and it ranks English worse than MiniLM (0.57 against full-text's 0.71), so by default "
        "its hybrid is full-text alone in both scripts; give it weight where questions paraphrase more",
    )
    hybrid_depth: int = Field(
        10,
        ge=1,
        le=200,
        description="hits each ranking contributes to hybrid fusion (at least top_k). With icu, 40 "
        "instead of 10 moved English hit@5 from 0.74 to 0.75 and cost 11 ms a query at 100k chunks",
    )
    vector_index_min_rows: int = Field(20000, ge=256, description="build an ANN index from this many rows")
    vector_index_type: Literal["IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_HNSW_FLAT", "IVF_PQ", "IVF_FLAT"] = (
        "IVF_HNSW_SQ"
    )
    vector_rows_per_partition: int = Field(20000, ge=256, description="IVF partitions = rows / this")
    vector_ef: int | None = Field(
        100, ge=1, description="HNSW search breadth: recall@5 0.96 at 100k chunks (make bench-knowledge)"
    )
    vector_nprobes: int | None = Field(None, ge=1, description="IVF partitions searched; None: LanceDB's")
    vector_refine_factor: int | None = Field(None, ge=1, description="re-rank this many x top_k exactly")
    reranker_model: str | None = Field(
        None,
        description="a local sentence-transformers CrossEncoder directory: search takes rerank_depth "
        "candidates from its mode and keeps the top_k this model scores best; None: no rerank stage",
    )
    rerank_depth: int = Field(20, ge=1, le=200, description="candidates the reranker scores per search")
    default_top_k: int = Field(5, ge=1, le=100)
    score_threshold: float | None = Field(None, description="drop hits scoring below this")
    sync_debounce_ms: int = Field(500, ge=0)
    compact_interval_s: float = Field(600, gt=0, description="how often the Retriever drops deleted rows")
    prompt_template: str = Field(
        "Use the following context to answer the question. If the context does not contain the answer, "
        "say that you do not know.\n\nContext:\n{context}\n\nQuestion: {question}",
        description="RAG prompt; must contain {context} and {question}",
    )

    @model_validator(mode="after")
    def _check(self) -> KnowledgeSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        for key in ("{context}", "{question}"):
            if key not in self.prompt_template:
                raise ValueError(f"prompt_template must contain {key}")
        return self

    @model_validator(mode="after")
    def _model_defaults(self) -> KnowledgeSettings:
        """The multilingual model's own name and fusion weights, unless set; it runs on numpy only."""
        if self.embedding_model != MULTILINGUAL:
            return self
        if self.embedding_backend != "torch":
            raise ValueError(
                "embedding_backend: the multilingual embedding model runs on numpy; leave it at torch"
            )
        if "embedding_model_id" not in self.model_fields_set:
            self.embedding_model_id = MULTILINGUAL_MODEL_ID
        if "hybrid_weights" not in self.model_fields_set:
            self.hybrid_weights = dict(MULTILINGUAL_WEIGHTS)
        return self

    @model_validator(mode="after")
    def _every_script_weighed(self) -> KnowledgeSettings:
        for name in SCRIPTS:
            self.hybrid_weights.setdefault(name, FusionWeights())  # type: ignore[index]
        return self

    def embedding_identity(self) -> tuple[str | int | None, ...]:
        """What decides the vectors: a store holds vectors of exactly one. ONNX Runtime in float32 gives
        PyTorch's vectors; int8 weights do not, so they are another embedding."""
        identity: tuple[str | int | None, ...] = (
            self.embedding_model,
            self.embedding_model_id,
            self.embedding_dimension,
        )
        return identity + (("onnx-int8",) if self.embedding_backend == "onnx-int8" else ())

    def default_store_name(self) -> str:
        """`knowledge` for the bundled embedding, else `knowledge-<digest of the embedding>`: a new
        embedding model gets tables of its own, and the old ones stay for whoever still uses them."""
        if self.embedding_identity() == ("bundled", "all-MiniLM-L6-v2", None):
            return "knowledge"
        digest = hashlib.sha256(repr(self.embedding_identity()).encode()).hexdigest()[:10]
        return f"knowledge-{digest}"

    def vector_search(self) -> VectorSearchOptions:
        return VectorSearchOptions(
            index_type=self.vector_index_type,
            rows_per_partition=self.vector_rows_per_partition,
            nprobes=self.vector_nprobes,
            ef=self.vector_ef,
            refine_factor=self.vector_refine_factor,
        )
