"""Searching one knowledge base's LanceDB table: vector, full-text and hybrid (both rankings at once,
fused by weighted reciprocal rank), always filtered on the soft-delete flag and any metadata filter."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from knowledge.config import SCRIPTS, FusionWeights, VectorSearchOptions
from knowledge.errors import StoreError
from knowledge.language import script

FILTERABLE = ("doc_id", "source", "title", "format")


def quote_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class Hit:
    text: str
    score: float
    document: str
    chunk: int
    metadata: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "score": self.score,
            "document": self.document,
            "chunk": self.chunk,
            "metadata": self.metadata,
        }


def where_clause(filters: dict[str, Any] | None) -> str:
    clauses = ["deleted = false"]
    for key, value in (filters or {}).items():
        if key not in FILTERABLE:
            raise StoreError(f"cannot filter on {key!r}; filterable fields: {', '.join(FILTERABLE)}")
        clauses.append(f"{key} = {quote_literal(value)}")
    return " AND ".join(clauses)


class TableSearch:
    """The three search modes over an open table, with the store's index options and fusion settings."""

    def __init__(
        self,
        options: VectorSearchOptions,
        rrf_k: int,
        weights: Mapping[str, FusionWeights] | None = None,
        depth: int = 20,
    ) -> None:
        self.options = options
        self.rrf_k = rrf_k
        self.weights = {name: (weights or {}).get(name, FusionWeights()) for name in SCRIPTS}
        self.depth = depth
        # Hybrid's full-text leg runs here while the caller's thread runs the vector leg.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fulltext")

    def _hits(self, rows: list[dict[str, Any]], score_key: str, transform: Any = None) -> list[Hit]:
        hits = []
        for row in rows:
            raw = float(row[score_key])
            hits.append(
                Hit(
                    text=row["text"],
                    score=transform(raw) if transform else raw,
                    document=row["doc_id"],
                    chunk=int(row["chunk"]),
                    metadata={
                        "source": row["source"],
                        "title": row["title"],
                        "format": row["format"],
                        **json.loads(row["metadata"] or "{}"),
                    },
                )
            )
        return hits

    def vector(
        self, table: Any, vector: Sequence[float] | None, where: str, columns: list[str], limit: int
    ) -> list[Hit]:
        if vector is None:
            raise StoreError("vector search needs a query vector")
        options = self.options
        query = (
            table.search(list(vector), vector_column_name="vector")
            .metric("cosine")
            .where(where, prefilter=True)
            .select([*columns, "_distance"])
            .limit(limit)
        )
        if options.nprobes is not None:
            query = query.nprobes(options.nprobes)
        if options.ef is not None:
            query = query.ef(options.ef)
        if options.refine_factor is not None:
            query = query.refine_factor(options.refine_factor)
        rows = query.to_arrow().to_pylist()
        return self._hits(rows, "_distance", lambda d: 1.0 - d)  # cosine similarity

    def hybrid(
        self,
        table: Any,
        query: str,
        vector: Sequence[float] | None,
        where: str,
        columns: list[str],
        top_k: int,
    ) -> list[Hit]:
        """Vector and full-text rankings, run at the same time, fused by weighted reciprocal rank. The
        weights follow the query's script (`hybrid_weights`): an embedding model that does not read
        Chinese must not drag a Chinese query's ranking below what full-text finds alone."""
        if vector is None:
            raise StoreError("hybrid search needs a query vector")
        weights = self.weights[script(query)]
        if not query.strip() or weights.fulltext == 0:
            return self.vector(table, vector, where, columns, top_k)
        depth = max(top_k, self.depth)
        if weights.vector == 0:
            return self.fulltext(table, query, where, columns, top_k)
        # Both legs release the GIL inside LanceDB: together they take as long as the slower one.
        text_leg = self._pool.submit(self.fulltext, table, query, where, columns, depth)
        by_vector = self.vector(table, vector, where, columns, depth)
        return self.fuse([by_vector, text_leg.result()], top_k, [weights.vector, weights.fulltext])

    def fulltext(self, table: Any, query: str, where: str, columns: list[str], limit: int) -> list[Hit]:
        if not query.strip():
            return []
        try:
            rows = (
                table.search(query, query_type="fts", fts_columns="text")
                .where(where, prefilter=True)
                .select([*columns, "_score"])
                .limit(limit)
                .to_arrow()
                .to_pylist()
            )
        except (ValueError, RuntimeError) as exc:
            if "index" in str(exc).lower():
                return []  # no full-text index yet (empty table)
            raise
        return self._hits(rows, "_score")

    def fuse(
        self, rankings: list[list[Hit]], top_k: int, weights: Sequence[float] | None = None
    ) -> list[Hit]:
        """Weighted reciprocal rank fusion: score = sum over rankings of weight / (k + rank)."""
        fused: dict[tuple[str, int], Hit] = {}
        scores: dict[tuple[str, int], float] = {}
        for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
            for rank, hit in enumerate(ranking, start=1):
                key = (hit.document, hit.chunk)
                fused.setdefault(key, hit)
                scores[key] = scores.get(key, 0.0) + weight / (self.rrf_k + rank)
        ordered = sorted(scores, key=lambda k: scores[k], reverse=True)[:top_k]
        return [Hit(**{**fused[k].__dict__, "score": scores[k]}) for k in ordered]
