"""The ingestion pipeline's stages: batches formed from what is ready, results in the order given, a bad
file failing alone, unchanged files skipped unparsed, and the stages overlapping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deployments import ingestion
from deployments.ingestion import IngestPipeline, Progress
from knowledge.config import KnowledgeSettings
from knowledge.ingest import PreparedDocument, content_hash, prepare

SETTINGS = KnowledgeSettings(
    fts_tokenizer="simple", ingest_embed_batch=8, ingest_write_chunks=10, chunk_size=60, chunk_overlap=0
)


class Recorder:
    """Stands for the Embedding and Retriever calls; records batch sizes and when each call ran."""

    def __init__(self, embed_s: float = 0.0) -> None:
        self.embedded: list[int] = []
        self.written: list[list[str]] = []
        self.events: list[str] = []
        self.embed_s = embed_s

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.events.append("embed+")
        await asyncio.sleep(self.embed_s)
        self.embedded.append(len(texts))
        self.events.append("embed-")
        if any("REFUSE" in t for t in texts):
            raise RuntimeError("embedding refused")
        return [[float(len(t))] for t in texts]

    async def write(self, docs: list[tuple[PreparedDocument, list[list[float]]]]) -> list[dict[str, Any]]:
        self.events.append("write")
        self.written.append([doc.doc_id for doc, _ in docs])
        return [{"document": doc.doc_id, "status": "ingested", "chunks": len(v)} for doc, v in docs]


@pytest.fixture(autouse=True)
def parse_in_process(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []

    class PrepareTask:  # stands for the Ray task: runs `prepare` in this process
        @staticmethod
        async def remote(name: str, data: bytes, raw: dict[str, Any]) -> PreparedDocument:
            parsed.append(name)
            await asyncio.sleep(0.001)
            return prepare(name, data, KnowledgeSettings.model_validate(raw))

    monkeypatch.setattr(ingestion, "_prepare_task", PrepareTask)
    return parsed


def text(n: int, word: str = "pump") -> bytes:
    return "\n\n".join(f"{word} note number {i} about the valve." for i in range(n)).encode()


def run(files: list[tuple[str, bytes]], recorder: Recorder, known: dict[str, str] | None = None) -> Any:
    seen: list[Progress] = []
    pipeline = IngestPipeline(SETTINGS, recorder.embed, recorder.write, known or {}, seen.append)
    sources = [(name, (lambda data=data: data)) for name, data in files]
    results = asyncio.run(pipeline.run(sources))
    return results, pipeline.progress, seen


def test_results_in_order_with_batched_embedding_and_writes() -> None:
    recorder = Recorder()
    files = [(f"d{i}.txt", text(3)) for i in range(12)]
    results, progress, seen = run(files, recorder)
    assert [r["document"] for r in results] == [f"d{i}.txt" for i in range(12)]
    assert all(r["status"] == "ingested" for r in results)
    assert sum(recorder.embedded) == sum(r["chunks"] for r in results) == progress.chunks
    # several documents per embedding call and per write, never a call per file
    assert len(recorder.embedded) < 12 and len(recorder.written) < 12
    assert max(recorder.embedded) <= SETTINGS.ingest_embed_batch
    assert (progress.done, progress.ingested, progress.files) == (12, 12, 12)
    assert len(seen) == 12


def test_a_bad_file_fails_alone_and_unchanged_ones_are_not_parsed(parse_in_process: list[str]) -> None:
    same = text(2)
    files = [("a.txt", text(2)), ("b.exe", b"MZ"), ("c.txt", same), ("d.txt", b"   "), ("e.txt", text(2))]
    results, progress, _ = run(files, Recorder(), known={"c.txt": content_hash(same)})
    assert [r["status"] for r in results] == ["ingested", "failed", "unchanged", "failed", "ingested"]
    assert "unsupported file type" in results[1]["error"]
    assert "c.txt" not in parse_in_process
    assert (progress.failed, progress.unchanged, progress.ingested) == (2, 1, 2)


def test_a_refused_embedding_batch_fails_only_its_files() -> None:
    files = [("a.txt", text(8)), ("b.txt", text(8, "REFUSE")), ("c.txt", text(8))]
    results, _, _ = run(files, Recorder())
    assert [r["status"] for r in results] == ["ingested", "failed", "ingested"]
    # what went wrong inside the service is in its log; the caller is told what to do
    assert "embedding failed" in results[1]["error"] and "refused" not in results[1]["error"]


def test_a_document_longer_than_a_batch_is_embedded_in_batch_sized_calls() -> None:
    # One call's vectors travel as one message between deployments: a 50 MB PDF's thousands of chunks
    # in one call outgrew it.
    recorder = Recorder()
    results, _, _ = run([("long.txt", text(60)), ("short.txt", text(2))], recorder)
    assert [r["status"] for r in results] == ["ingested", "ingested"]
    assert max(recorder.embedded) <= SETTINGS.ingest_embed_batch and sum(recorder.embedded) > 30


def test_a_file_that_cannot_be_read_fails_alone() -> None:
    def unreadable() -> bytes:
        raise OSError("permission denied")

    pipeline = IngestPipeline(SETTINGS, Recorder().embed, Recorder().write, {})
    results = asyncio.run(pipeline.run([("a.txt", unreadable), ("b.txt", lambda: text(1))]))
    assert [r["status"] for r in results] == ["failed", "ingested"]
    assert "permission denied" in results[0]["error"]


def test_the_next_batch_is_embedded_while_the_previous_one_is_in_flight() -> None:
    recorder = Recorder(embed_s=0.05)
    _, progress, _ = run([(f"d{i}.txt", text(8)) for i in range(6)], recorder)
    # with two calls allowed in flight, a second starts before the first ends
    assert recorder.events[:2] == ["embed+", "embed+"]
    timing = progress.as_dict()
    assert (
        timing["embed_busy_s"] >= 0.1 and timing["first_embed_s"] is not None and timing["write_busy_s"] >= 0
    )
