"""Searching one knowledge base's LanceDB table: vector, full-text and hybrid (reciprocal rank fusion),
always filtered on the soft-delete flag and any metadata filter."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from knowledge.config import VectorSearchOptions
from knowledge.errors import StoreError

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
    """The three search modes over an open table, with the store's index options and RRF constant."""

    def __init__(self, options: VectorSearchOptions, rrf_k: int) -> None:
        self.options = options
        self.rrf_k = rrf_k

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
        """LanceDB's own hybrid query (vector and full-text in one plan) fused by reciprocal rank: one
        query's overhead instead of two. Without a full-text index yet, fusion of what there is."""
        if vector is None:
            raise StoreError("hybrid search needs a query vector")
        if not query.strip():
            return self.vector(table, vector, where, columns, top_k)
        options = self.options
        builder = (
            table.search(query_type="hybrid", vector_column_name="vector", fts_columns="text")
            .vector(list(vector))
            .text(query)
            .metric("cosine")
            .where(where, prefilter=True)
            .select(columns)
            .limit(top_k)
        )
        if options.ef is not None:
            builder = builder.ef(options.ef)
        if options.nprobes is not None:
            builder = builder.nprobes(options.nprobes)
        from lancedb.rerankers import RRFReranker  # here: keeps settings imports free of lancedb

        try:
            rows = builder.rerank(RRFReranker(K=self.rrf_k)).to_arrow().to_pylist()
        except (ValueError, RuntimeError) as exc:
            if "index" not in str(exc).lower():
                raise
            depth = max(top_k * 4, 20)
            return self.fuse([self.vector(table, vector, where, columns, depth)], top_k)
        return self._hits(rows, "_relevance_score")

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

    def fuse(self, rankings: list[list[Hit]], top_k: int) -> list[Hit]:
        """Reciprocal rank fusion: score = sum over rankings of 1 / (k + rank)."""
        fused: dict[tuple[str, int], Hit] = {}
        scores: dict[tuple[str, int], float] = {}
        for ranking in rankings:
            for rank, hit in enumerate(ranking, start=1):
                key = (hit.document, hit.chunk)
                fused.setdefault(key, hit)
                scores[key] = scores.get(key, 0.0) + 1.0 / (self.rrf_k + rank)
        ordered = sorted(scores, key=lambda k: scores[k], reverse=True)[:top_k]
        return [Hit(**{**fused[k].__dict__, "score": scores[k]}) for k in ordered]
