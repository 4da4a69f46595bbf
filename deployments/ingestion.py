"""Bulk ingestion as three overlapping stages, so the embedder never waits for parsing or writing:

    parse (Ray tasks, `ingest_parse_tasks` at once) -> embed (batches of `ingest_embed_batch` texts,
    `ingest_embed_in_flight` at once) -> write (batches of `ingest_write_chunks`, one commit for new docs)

Each stage hands on through a bounded queue: a fast stage waits for a slow one instead of piling up
parsed documents in memory. Files are read when the parse stage reaches them (a folder of 10,000 files
is never all in memory). Each file succeeds or fails on its own; `Progress` counts as it goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from knowledge.config import KnowledgeSettings
from knowledge.ingest import PreparedDocument, content_hash, document_id, prepare
from knowledge.loaders import LoadError

log = logging.getLogger(__name__)
_EMBED_FAILED = "embedding failed for this file's batch (the service log has the cause); upload it again"
_WRITE_FAILED = "writing failed for this file's batch (the service log has the cause); upload it again"

# A file to ingest: its name (a document id to be) and how to get its bytes.
Source = tuple[str, Callable[[], bytes]]
_DONE = object()  # the end of a stage's input


@ray.remote(num_cpus=0.25)
def _prepare_task(name: str, data: bytes, settings: dict[str, Any]) -> PreparedDocument:
    return prepare(name, data, KnowledgeSettings.model_validate(settings))


@dataclass
class Progress:
    """What an ingestion has done so far: what `GET` on its job and the CLI's progress line show."""

    files: int = 0
    done: int = 0  # ingested, unchanged or failed
    ingested: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks: int = 0
    started: float = field(default_factory=time.monotonic)
    # Where the time goes: the summed time of embedding calls (two may overlap) and of writes, and how
    # long the embedder waited for its first texts (the parse workers' start).
    embed_busy_s: float = 0.0
    write_busy_s: float = 0.0
    first_embed_s: float | None = None

    def count(self, result: dict[str, Any]) -> None:
        self.done += 1
        status = result["status"]
        setattr(self, status, getattr(self, status) + 1)
        self.chunks += int(result.get("chunks", 0))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        elapsed = max(time.monotonic() - out.pop("started"), 1e-6)
        for key in ("embed_busy_s", "write_busy_s", "first_embed_s"):
            out[key] = None if out[key] is None else round(out[key], 1)
        return {**out, "seconds": round(elapsed, 1), "chunks_per_s": round(self.chunks / elapsed, 1)}


class IngestPipeline:
    """One ingestion run into one knowledge base. `embed(texts)` and `write(docs)` are the Embedding and
    Retriever calls (`KnowledgeAPI` passes its own); `known` maps document ids to the content hashes the
    knowledge base holds, so unchanged files are skipped before they are parsed."""

    def __init__(
        self,
        settings: KnowledgeSettings,
        embed: Callable[[list[str]], Awaitable[list[list[float]]]],
        write: Callable[[list[tuple[PreparedDocument, list[list[float]]]]], Awaitable[list[dict[str, Any]]]],
        known: dict[str, str],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.settings = settings
        self._embed = embed
        self._write = write
        self.known = known
        self.progress = Progress()
        self._on_progress = on_progress
        self._results: dict[int, dict[str, Any]] = {}
        self._settings_json = settings.model_dump(mode="json")

    def _finish(self, index: int, result: dict[str, Any]) -> None:
        self._results[index] = result
        self.progress.count(result)
        if self._on_progress is not None:
            self._on_progress(self.progress)

    async def run(self, sources: Iterable[Source], total: int | None = None) -> list[dict[str, Any]]:
        """Every file's result, in the order given."""
        listed = list(sources) if total is None else sources
        self.progress.files = total if total is not None else len(listed)  # type: ignore[arg-type]
        cfg = self.settings
        # Bounded: parsed documents wait for the embedder in memory, a few batches' worth at most.
        parsed: asyncio.Queue[Any] = asyncio.Queue(maxsize=cfg.ingest_queue_documents)
        embedded: asyncio.Queue[Any] = asyncio.Queue(maxsize=cfg.ingest_embed_in_flight + 1)
        stages = [
            asyncio.create_task(self._parse(listed, parsed)),
            asyncio.create_task(self._embed_stage(parsed, embedded)),
            asyncio.create_task(self._write_stage(embedded)),
        ]
        try:
            await asyncio.gather(*stages)
        finally:
            for stage in stages:
                stage.cancel()
        return [self._results[i] for i in sorted(self._results)]

    # --- parse ------------------------------------------------------------------------------------
    async def _parse(self, sources: Iterable[Source], out: asyncio.Queue[Any]) -> None:
        slots = asyncio.Semaphore(self.settings.ingest_parse_tasks)
        running: set[asyncio.Task[None]] = set()

        async def one(index: int, name: str, data: bytes) -> None:
            try:
                doc = await _prepare_task.remote(name, data, self._settings_json)
            except Exception as exc:  # the task's LoadError arrives wrapped in a RayTaskError
                cause = getattr(exc, "cause", None) or exc
                self._finish(index, {"document": name, "status": "failed", "error": str(cause).strip()})
            else:
                await out.put((index, doc))
            finally:
                slots.release()

        for index, (name, read) in enumerate(sources):
            try:
                doc_id = document_id(name)
                data = await asyncio.to_thread(read)
            except (LoadError, OSError) as exc:
                self._finish(index, {"document": name, "status": "failed", "error": str(exc)})
                continue
            if self.known.get(doc_id) == content_hash(data):
                self._finish(index, {"document": doc_id, "status": "unchanged", "chunks": 0})
                continue
            await slots.acquire()
            task = asyncio.create_task(one(index, name, data))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)
        await out.put(_DONE)

    # --- embed ------------------------------------------------------------------------------------
    async def _embed_stage(self, inp: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        slots = asyncio.Semaphore(self.settings.ingest_embed_in_flight)
        running: set[asyncio.Task[None]] = set()

        async def one(group: list[tuple[int, PreparedDocument]]) -> None:
            started = time.monotonic()
            if self.progress.first_embed_s is None:
                self.progress.first_embed_s = started - self.progress.started
            texts = [t for _, doc in group for t in doc.texts]
            size = self.settings.ingest_embed_batch
            try:
                # A document longer than a batch (a 50 MB PDF: thousands of chunks) goes in batch-sized
                # calls too: one call's vectors must fit a message between deployments.
                vectors = [
                    v for at in range(0, len(texts), size) for v in await self._embed(texts[at : at + size])
                ]
            except Exception:  # the embedder refused the batch: its files fail, the rest go on
                log.exception("ingestion: embedding a batch of %d texts failed", len(texts))
                for index, doc in group:
                    self._finish(index, {"document": doc.doc_id, "status": "failed", "error": _EMBED_FAILED})
            else:
                self.progress.embed_busy_s += time.monotonic() - started
                at, done = 0, []
                for index, doc in group:
                    done.append((index, doc, vectors[at : at + len(doc.texts)]))
                    at += len(doc.texts)
                await out.put(done)
            finally:
                slots.release()

        finished = False
        while not finished:
            # A batch is formed when the embedder can take one: whatever the parsers have ready, up to
            # `ingest_embed_batch` texts, so it is never idle while texts wait, nor fed one file at a time
            # while more are ready.
            await slots.acquire()
            first = await inp.get()
            if first is _DONE:
                slots.release()
                break
            group, texts = [first], len(first[1].texts)
            while texts < self.settings.ingest_embed_batch and not inp.empty():
                item = inp.get_nowait()
                if item is _DONE:
                    finished = True
                    break
                group.append(item)
                texts += len(item[1].texts)
            task = asyncio.create_task(one(group))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)
        await out.put(_DONE)

    # --- write ------------------------------------------------------------------------------------
    async def _write_stage(self, inp: asyncio.Queue[Any]) -> None:
        batch: list[tuple[int, PreparedDocument, list[list[float]]]] = []
        chunks = 0

        async def flush() -> None:
            nonlocal batch, chunks
            group, batch, chunks = batch, [], 0
            started = time.monotonic()
            try:
                written = await self._write([(doc, vectors) for _, doc, vectors in group])
            except Exception as exc:  # the store refused the batch: its files fail, nothing half-written
                # A store error (an APIError) says what is wrong; anything else is ours, and its text
                # (an RPC's internals) is for the log, not for the caller.
                message = getattr(exc, "message", None)
                if message is None:
                    log.exception("ingestion: writing a batch of %d documents failed", len(group))
                written = [
                    {"document": doc.doc_id, "status": "failed", "error": message or _WRITE_FAILED}
                    for _, doc, _ in group
                ]
            self.progress.write_busy_s += time.monotonic() - started
            for (index, _, _), result in zip(group, written, strict=True):
                self._finish(index, result)

        while True:
            group = await inp.get()
            if group is _DONE:
                break
            batch.extend(group)
            chunks += sum(len(doc.texts) for _, doc, _ in group)
            # A batch is written when big enough, or when nothing else is waiting (small uploads and
            # the tail of a big one are not held back).
            if chunks >= self.settings.ingest_write_chunks or inp.empty():
                await flush()
        if batch:
            await flush()
