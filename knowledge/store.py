"""Knowledge-base tables on LanceDB: one table per knowledge base, rows keyed by (document, chunk).

Writes are single LanceDB commits, so readers (which see one table version) never see a half-done change:
- replacing a document is one `merge_insert` that inserts the new chunks and deletes the old ones of that
  document in the same commit (no query sees both versions, or neither);
- deleting a document is one `update` that marks its rows `deleted`; every query filters them out at once,
  and `compact()` (run every `knowledge.compact_interval_s` by the Retriever) removes them later.
Search modes: `vector` (cosine), `fulltext` (BM25 on a LanceDB FTS index) and `hybrid` (both, fused by
reciprocal rank). Every search takes top_k, an optional score threshold and an equality metadata filter.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# LanceDB logs a deprecation warning per query for our column selection (it still projects the
# score columns, which we read); keep its log to errors unless the operator sets LANCEDB_LOG.
os.environ.setdefault("LANCEDB_LOG", "error")

import lancedb  # noqa: E402
import pyarrow as pa

from knowledge.config import FusionWeights, KnowledgeSettings, SearchMode, VectorSearchOptions
from knowledge.errors import KnowledgeBaseNotFound, StoreError
from knowledge.names import check_name
from knowledge.search import Hit, TableSearch, quote_literal, where_clause
from knowledge.sources import confine

_META_FILE = "knowledge_bases.json"


@dataclass
class ChunkRecord:
    chunk: int
    text: str
    vector: Sequence[float]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class DocumentRecord:
    """One document's chunks, as a write puts them in place."""

    doc_id: str
    content_hash: str
    chunks: list[ChunkRecord]
    source: str = ""
    title: str = ""
    fmt: str = ""


def schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("doc_id", pa.string()),
            pa.field("chunk", pa.int32()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("content_hash", pa.string()),
            pa.field("deleted", pa.bool_()),
            pa.field("source", pa.string()),
            pa.field("title", pa.string()),
            pa.field("format", pa.string()),
            pa.field("metadata", pa.string()),
            pa.field("updated_at", pa.float64()),
        ]
    )


class KnowledgeStore:
    """All knowledge bases under one directory."""

    def __init__(
        self,
        root: Path,
        dim: int,
        *,
        fts_tokenizer: str = "icu",
        fts_language: str | None = "English",
        rrf_k: int = 60,
        hybrid_weights: Mapping[str, FusionWeights] | None = None,
        hybrid_depth: int = 20,
        vector_index_min_rows: int = 20000,
        search: VectorSearchOptions | None = None,
        source_roots: Sequence[Path | str] = (),
    ) -> None:
        self.root = Path(root)
        # The folders a knowledge base may follow (`knowledge.source_roots`); none: no source folder at all.
        self.source_roots = [Path(r) for r in source_roots]
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.fts_tokenizer = fts_tokenizer
        self.fts_language = fts_language
        self.vector_index_min_rows = vector_index_min_rows
        self.vector_search = search or VectorSearchOptions()
        self._search = TableSearch(self.vector_search, rrf_k, hybrid_weights, hybrid_depth)
        self._db = lancedb.connect(str(self.root))
        self._lock = threading.RLock()  # one writer per process; LanceDB resolves across processes
        # Open tables are kept: opening one per query costs more than a small query itself. Writes go
        # through the same handles, so readers here always see them.
        self._tables: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, root: Path, dim: int, cfg: KnowledgeSettings, **overrides: Any) -> KnowledgeStore:
        """A store with the knowledge settings' tokenizer, fusion, index and source-root options."""
        options: dict[str, Any] = {
            "fts_tokenizer": cfg.fts_tokenizer,
            "fts_language": cfg.fts_language,
            "rrf_k": cfg.rrf_k,
            "hybrid_weights": cfg.hybrid_weights,
            "hybrid_depth": cfg.hybrid_depth,
            "vector_index_min_rows": cfg.vector_index_min_rows,
            "search": cfg.vector_search(),
            "source_roots": cfg.source_roots,
        }
        return cls(root, dim, **(options | overrides))

    # --- knowledge bases --------------------------------------------------------------------------
    def _meta_path(self) -> Path:
        return self.root / _META_FILE

    def _read_meta(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self._meta_path().read_text())
        except FileNotFoundError:
            return {}

    def _write_meta(self, meta: dict[str, dict[str, Any]]) -> None:
        tmp = self._meta_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, ensure_ascii=False, indent=1))
        tmp.replace(self._meta_path())  # atomic: a crash never leaves half a registry

    def list_kbs(self) -> list[dict[str, Any]]:
        return [{"name": name, **info} for name, info in sorted(self._read_meta().items())]

    def get_kb(self, name: str) -> dict[str, Any]:
        check_name(name)
        meta = self._read_meta()
        if name not in meta:
            raise KnowledgeBaseNotFound(f"knowledge base {name!r} does not exist")
        return {"name": name, **meta[name]}

    def create_kb(self, name: str, description: str = "", source_folder: str | None = None) -> dict[str, Any]:
        """A new, empty knowledge base. A `source_folder` must be an existing folder whose real path lies
        inside `source_roots` (`SourceFolderNotAllowed` otherwise); its real path is what is kept."""
        check_name(name)
        if source_folder:
            source_folder = str(confine(source_folder, self.source_roots))
        with self._lock:
            meta = self._read_meta()
            if name in meta:
                raise StoreError(f"knowledge base {name!r} already exists")
            self._db.create_table(self._table_name(name), schema=schema(self.dim), exist_ok=True)
            meta[name] = {
                "description": description,
                "source_folder": source_folder,
                "created_at": time.time(),
                "version": 0,
                "dim": self.dim,
            }
            self._write_meta(meta)
        return {"name": name, **meta[name]}

    def delete_kb(self, name: str) -> None:
        self.get_kb(name)
        with self._lock:
            meta = self._read_meta()
            meta.pop(name, None)
            self._write_meta(meta)
            self._tables.pop(name, None)
            self._db.drop_table(self._table_name(name), ignore_missing=True)

    def version(self, name: str) -> int:
        return int(self.get_kb(name)["version"])

    def _bump(self, name: str) -> None:
        meta = self._read_meta()
        if name in meta:
            meta[name]["version"] = int(meta[name].get("version", 0)) + 1
            self._write_meta(meta)

    @staticmethod
    def _table_name(name: str) -> str:
        if name.isascii():
            return f"kb_{name}"
        # LanceDB table names are ASCII: a CJK name maps to a stable digest of itself.
        return "kbx_" + hashlib.sha256(name.encode()).hexdigest()[:24]

    def _table(self, name: str) -> Any:
        self.get_kb(name)
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = self._db.open_table(self._table_name(name))
        return table

    # --- documents --------------------------------------------------------------------------------
    def replace_document(
        self,
        name: str,
        doc_id: str,
        content_hash: str,
        chunks: Sequence[ChunkRecord],
        *,
        source: str = "",
        title: str = "",
        fmt: str = "",
    ) -> int:
        """Put a document's chunks in place of whatever it had, in one commit. Returns the chunk count."""
        document = DocumentRecord(doc_id, content_hash, list(chunks), source=source, title=title, fmt=fmt)
        return self.replace_documents(name, [document])[0]

    def _rows(self, doc: DocumentRecord, now: float) -> list[dict[str, Any]]:
        rows = [
            {
                "id": f"{doc.doc_id}\x1f{c.chunk}",
                "doc_id": doc.doc_id,
                "chunk": c.chunk,
                "text": c.text,
                "vector": [float(x) for x in c.vector],
                "content_hash": doc.content_hash,
                "deleted": False,
                "source": doc.source,
                "title": doc.title,
                "format": doc.fmt,
                "metadata": json.dumps(c.metadata, ensure_ascii=False, default=str),
                "updated_at": now,
            }
            for c in doc.chunks
        ]
        for row in rows:
            if len(row["vector"]) != self.dim:
                raise StoreError(f"vector of dimension {len(row['vector'])}; the store expects {self.dim}")
        return rows

    def replace_documents(self, name: str, documents: Sequence[DocumentRecord]) -> list[int]:
        """Put each document's chunks in place of whatever it had. Documents the table does not hold yet
        go in together as one commit (a bulk ingestion's batch is one table version, not one per file);
        a document that had rows is replaced in a commit of its own, so no query sees both versions of
        it, or neither. Returns each document's chunk count."""
        table = self._table(name)
        now = time.time()
        prepared = [(doc, self._rows(doc, now)) for doc in documents]  # every check before any write
        with self._lock:
            held = self._held(table, [doc.doc_id for doc in documents])
            fresh = [row for doc, rows in prepared if doc.doc_id not in held for row in rows]
            if fresh:
                # A plain append, without merge_insert's join against the whole table (that join made
                # bulk ingestion slow down as tables grew).
                table.add(pa.Table.from_pylist(fresh, schema=schema(self.dim)))
            for doc, rows in prepared:
                if doc.doc_id in held:
                    (
                        table.merge_insert("id")
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .when_not_matched_by_source_delete(f"doc_id = {quote_literal(doc.doc_id)}")
                        .execute(pa.Table.from_pylist(rows, schema=schema(self.dim)))
                    )
            if prepared:
                self._bump(name)
        return [len(rows) for _, rows in prepared]

    @staticmethod
    def _held(table: Any, doc_ids: list[str]) -> set[str]:
        """Which of these documents have rows (live or marked deleted) in the table."""
        held: set[str] = set()
        for start in range(0, len(doc_ids), 500):
            listed = ", ".join(quote_literal(d) for d in doc_ids[start : start + 500])
            rows = table.search().where(f"doc_id IN ({listed})").select(["doc_id"]).limit(None).to_arrow()
            held.update(rows.column("doc_id").to_pylist())
        return held

    def delete_document(self, name: str, doc_id: str) -> bool:
        """Mark a document deleted (one commit); queries skip it from now on. False if it had no rows."""
        table = self._table(name)
        where = f"doc_id = {quote_literal(doc_id)} AND deleted = false"
        with self._lock:
            if table.count_rows(where) == 0:
                return False
            table.update(where=where, values={"deleted": True, "updated_at": time.time()})
            self._bump(name)
        return True

    def documents(self, name: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        table = self._table(name)
        where = None if include_deleted else "deleted = false"
        query = table.search().select(["doc_id", "chunk", "content_hash", "source", "title", "deleted"])
        if where:
            query = query.where(where)
        rows = query.limit(None).to_arrow().to_pylist() if table.count_rows() else []
        docs: dict[str, dict[str, Any]] = {}
        for row in rows:
            doc = docs.setdefault(
                row["doc_id"],
                {
                    "document": row["doc_id"],
                    "content_hash": row["content_hash"],
                    "source": row["source"],
                    "title": row["title"],
                    "chunks": 0,
                    "deleted": row["deleted"],
                },
            )
            doc["chunks"] += 1
        return sorted(docs.values(), key=lambda d: d["document"])

    def export_document(self, name: str, doc_id: str) -> dict[str, Any]:
        """A live document's chunks in order, with their texts and metadata, as `PreparedDocument`'s
        fields: what a re-index embeds again with another model (no original file is kept)."""
        table = self._table(name)
        where = f"doc_id = {quote_literal(doc_id)} AND deleted = false"
        columns = ["chunk", "text", "metadata", "content_hash", "source", "title", "format"]
        rows = sorted(
            table.search().where(where).select(columns).limit(None).to_arrow().to_pylist(),
            key=lambda r: r["chunk"],
        )
        if not rows:
            raise StoreError(f"document {doc_id!r} not found in knowledge base {name!r}")
        return {
            "doc_id": doc_id,
            "content_hash": rows[0]["content_hash"],
            "source": rows[0]["source"],
            "title": rows[0]["title"],
            "fmt": rows[0]["format"],
            "texts": [r["text"] for r in rows],
            "metadata": [json.loads(r["metadata"] or "{}") for r in rows],
        }

    def content_hashes(self, name: str, doc_ids: Sequence[str] | None = None) -> dict[str, str]:
        """Live documents' content hashes: all of them, or only those of `doc_ids` (what an upload
        compares against, without reading a large table's every row)."""
        if doc_ids is None:
            return {d["document"]: d["content_hash"] for d in self.documents(name)}
        table = self._table(name)
        hashes: dict[str, str] = {}
        for start in range(0, len(doc_ids), 500):
            listed = ", ".join(quote_literal(d) for d in doc_ids[start : start + 500])
            rows = (
                table.search()
                .where(f"deleted = false AND doc_id IN ({listed})")
                .select(["doc_id", "content_hash"])
                .limit(None)
                .to_arrow()
                .to_pylist()
            )
            hashes.update({r["doc_id"]: r["content_hash"] for r in rows})
        return hashes

    def compact(self, name: str) -> int:
        """Remove rows marked deleted and compact the files; returns how many rows went. They leave the
        current version; older versions keep their files for LanceDB's default 7 days, so a query that
        opened one of them (here or in another process) still finishes."""
        table = self._table(name)
        with self._lock:
            gone = table.count_rows("deleted = true")
            if gone:
                table.delete("deleted = true")
            table.optimize()
        return gone

    def fts_options(self) -> dict[str, Any]:
        """The full-text index's tokenizer options, as LanceDB's `create_fts_index` takes them."""
        options: dict[str, Any] = {
            "base_tokenizer": self.fts_tokenizer,
            "stem": False,
            "remove_stop_words": False,
        }
        if self.fts_tokenizer == "ngram":
            # CJK has no spaces: index 1- to 3-character grams; stemming would mangle them.
            options |= {"ngram_min_length": 1, "ngram_max_length": 3}
        elif self.fts_tokenizer in ("icu", "simple") and self.fts_language:
            options |= {"stem": True, "remove_stop_words": True, "language": self.fts_language}
        return options

    def _fts_index(self, table: Any) -> Any:
        return next(
            (ix for ix in table.list_indices() if "text" in ix.columns and "FTS" in str(ix.index_type)), None
        )

    def _fts_is_current(self, index: Any) -> bool:
        """The index was built with the tokenizer settings in force (one built under other settings, e.g.
        before an upgrade changed the default, is rebuilt at the next write)."""
        details = getattr(index, "index_details", None) or {}
        wanted = self.fts_options()
        built = {
            "base_tokenizer": details.get("base_tokenizer"),
            "stem": details.get("stem"),
            "remove_stop_words": details.get("remove_stop_words"),
        }
        return all(built[k] in (None, wanted[k]) for k in built)

    def refresh_indexes(self, name: str) -> None:
        """After writes: create the indexes once, then fold every write's new rows in (`optimize`, tens of
        ms at 10k rows). Unindexed rows are searched too, but full-text scores them with other BM25
        statistics, which ranked a new document below older ones for the same words until folded in."""
        table = self._table(name)
        with self._lock:
            fts = self._fts_index(table)
            if fts is None or not self._fts_is_current(fts):
                self.build_indexes(name)
                return
            stats = table.index_stats(fts.name)
            if stats is not None and stats.num_unindexed_rows > 0:
                table.optimize()

    def build_indexes(self, name: str) -> None:
        """Full-text index always; an ANN vector index once the table is big enough to need one."""
        table = self._table(name)
        with self._lock:
            table.create_fts_index("text", replace=True, **self.fts_options())
            # Every query filters on `deleted`, every replace on `doc_id`: index both.
            table.create_scalar_index("deleted", index_type="BITMAP", replace=True)
            table.create_scalar_index("doc_id", index_type="BTREE", replace=True)
            rows = table.count_rows()
            if rows >= self.vector_index_min_rows:
                options = self.vector_search
                table.create_index(
                    metric="cosine",
                    vector_column_name="vector",
                    index_type=options.index_type,
                    num_partitions=max(1, rows // options.rows_per_partition),
                    replace=True,
                )

    # --- search -----------------------------------------------------------------------------------
    def search(
        self,
        name: str,
        *,
        query: str,
        vector: Sequence[float] | None,
        mode: SearchMode = "hybrid",
        top_k: int = 5,
        score_threshold: float | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[Hit]:
        table = self._table(name)
        where = where_clause(filters)
        columns = ["doc_id", "chunk", "text", "source", "title", "format", "metadata"]
        if mode == "vector":
            hits = self._search.vector(table, vector, where, columns, top_k)
        elif mode == "fulltext":
            hits = self._search.fulltext(table, query, where, columns, top_k)
        elif mode == "hybrid":
            hits = self._search.hybrid(table, query, vector, where, columns, top_k)
        else:
            raise StoreError(f"unknown search mode {mode!r}; use vector, fulltext or hybrid")
        if score_threshold is not None:
            hits = [h for h in hits if h.score >= score_threshold]
        return hits[:top_k]
