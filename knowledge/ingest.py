"""One document from bytes to stored chunks: load -> split -> (embed) -> replace in the store.

`prepare` is pure CPU work with no store or model, so it can run in a Ray task on any node; embedding is
done by the caller (in-process `Embedder`, or the batched Embedding deployment) and `write` is one commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from knowledge.config import KnowledgeSettings
from knowledge.loaders import LoadError, load_bytes
from knowledge.splitter import split_text
from knowledge.store import ChunkRecord, KnowledgeStore


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def document_id(name: str) -> str:
    """A stable id from a file name or folder-relative path ('a/b.pdf'); never an absolute path."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    if not parts:
        raise LoadError(f"{name!r} is not a usable document name")
    return "/".join(parts)


@dataclass
class PreparedDocument:
    doc_id: str
    content_hash: str
    source: str
    title: str
    fmt: str
    texts: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class IngestResult:
    document: str
    status: str  # ingested | unchanged | failed
    chunks: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def prepare(
    name: str, data: bytes, settings: KnowledgeSettings, source: str | None = None
) -> PreparedDocument:
    doc_id = document_id(name)
    sections = load_bytes(name, data, source or doc_id)
    prepared = PreparedDocument(
        doc_id=doc_id,
        content_hash=content_hash(data),
        source=source or doc_id,
        title=sections[0].metadata.get("title", "") if sections else "",
        fmt=PurePosixPath(name).suffix.lower().lstrip("."),
    )
    for section in sections:
        extra = {
            k: v for k, v in section.metadata.items() if k in ("page", "row", "sheet", "slide", "encoding")
        }
        for chunk in split_text(section.text, settings):
            prepared.texts.append(chunk.text)
            prepared.metadata.append(extra)
    if not prepared.texts:
        raise LoadError(f"{name}: no text found in the file")
    return prepared


def write(store: KnowledgeStore, kb: str, doc: PreparedDocument, vectors: Sequence[Sequence[float]]) -> int:
    records = [
        ChunkRecord(chunk=i, text=t, vector=v, metadata=m)
        for i, (t, v, m) in enumerate(zip(doc.texts, vectors, doc.metadata, strict=True))
    ]
    return store.replace_document(
        kb, doc.doc_id, doc.content_hash, records, source=doc.source, title=doc.title, fmt=doc.fmt
    )
