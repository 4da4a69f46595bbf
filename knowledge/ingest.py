"""One document from bytes to stored chunks: load -> split -> (embed) -> replace in the store.

`prepare` is pure CPU work with no store or model, so it can run in a Ray task on any node; embedding is
done by the caller (in-process `Embedder`, or the batched Embedding deployment) and `write` is one commit.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from knowledge.config import KnowledgeSettings
from knowledge.loaders import LoadError, load_bytes
from knowledge.splitter import split_text
from knowledge.store import ChunkRecord, DocumentRecord, KnowledgeStore

# Section metadata each of its chunks keeps (the source, title and format are the document's own).
_KEPT_METADATA = ("page", "row", "sheet", "slide", "chapter", "heading", "encoding")


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Control characters (NUL included), invisible format characters (a right-to-left override can make
# 'txt.exe' read as 'exe.txt'), surrogates and line or paragraph separators never reach a document id.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_LEADING = re.compile(r"^[\s.]+")


def _clean_part(part: str) -> str:
    kept = "".join(c for c in part if unicodedata.category(c) not in _UNSAFE_CATEGORIES)
    return _LEADING.sub("", kept).rstrip()  # no hidden names, and '..' is left empty


def document_id(name: str) -> str:
    """A stable id from a file name or folder-relative path ('a/b.pdf'): separators ('/' or '\\') split
    it, each part loses control characters and leading dots, empty parts go. Never absolute, never '..',
    and the same id for a name already cleaned (folder sync hands ids back in as names)."""
    parts = [_clean_part(p) for p in name.replace("\\", "/").split("/")]
    parts = [p for p in parts if p]
    if not parts:
        raise LoadError(f"{name!r} is not a usable document name")
    return "/".join(parts)


def upload_name(name: str) -> str:
    """An uploaded file's name made safe: its last part only ('../../x.txt', '/etc/x.txt' and
    'C:\\x\\y.txt' become 'x.txt', 'x.txt' and 'y.txt'), cleaned as `document_id` cleans. `LoadError`
    when nothing usable is left."""
    return document_id(name).rsplit("/", 1)[-1]


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
        extra = {k: v for k, v in section.metadata.items() if k in _KEPT_METADATA}
        context = _context(section.metadata, settings)
        for chunk in split_text(section.text, settings):
            prepared.texts.append(context + chunk.text)
            prepared.metadata.append(extra)
    if not prepared.texts:
        raise LoadError(f"{name}: no text found in the file")
    return prepared


def _context(meta: dict[str, Any], settings: KnowledgeSettings) -> str:
    """The line put before each chunk of a section (`knowledge.chunk_context`): where the passage is, so
    that a question about a section finds passages that do not repeat its name."""
    if settings.chunk_context == "none" or not meta.get("heading"):
        return ""
    where = meta["heading"]
    title = meta.get("title")
    if settings.chunk_context == "title_heading" and title and not where.startswith(title):
        where = f"{title} > {where}"
    return where + "\n"


def record(doc: PreparedDocument, vectors: Sequence[Sequence[float]]) -> DocumentRecord:
    chunks = [
        ChunkRecord(chunk=i, text=t, vector=v, metadata=m)
        for i, (t, v, m) in enumerate(zip(doc.texts, vectors, doc.metadata, strict=True))
    ]
    return DocumentRecord(
        doc.doc_id, doc.content_hash, chunks, source=doc.source, title=doc.title, fmt=doc.fmt
    )


def write(store: KnowledgeStore, kb: str, doc: PreparedDocument, vectors: Sequence[Sequence[float]]) -> int:
    return store.replace_documents(kb, [record(doc, vectors)])[0]


def write_many(
    store: KnowledgeStore, kb: str, docs: Sequence[tuple[PreparedDocument, Sequence[Sequence[float]]]]
) -> list[int]:
    """A batch of documents in as few commits as the store can make it (one for all new ones)."""
    return store.replace_documents(kb, [record(doc, vectors) for doc, vectors in docs])
