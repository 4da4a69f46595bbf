"""`raychat upgrade --reindex`: a new embedding model or dimension gets tables of its own (green's store,
`knowledge.default_store_name`), filled from blue's in the background while blue keeps serving.

No original file is kept, so each live document's stored chunks (texts and metadata, in order) are read
from blue's Retriever, embedded again by green's Embedding deployment and written by green's Retriever.
While the upgrade runs, the proxies send every knowledge-base write (create, upload, delete) to blue, so
blue's store is the truth and green's follows it: a full pass first, then before each weight step a pass
over what changed on blue since the last one. At the end, writes move to green, and one last pass takes
the writes blue received before that move. Blue's tables are left as they are: a rollback finds them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster import kb
from cluster.settings import RaychatSettings
from deployments.gateway.protocol import APIError
from knowledge.ingest import PreparedDocument

Say = Callable[[str], None]
# {kb name: {"meta": (description, source_folder), "docs": {doc id: content hash}}}
Snapshot = dict[str, dict[str, Any]]


@dataclass
class Progress:
    documents: int = 0
    chunks: int = 0
    deleted: int = 0
    seconds: float = 0.0
    passes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


class Reindexer:
    def __init__(
        self, blue: RaychatSettings, blue_app: str, green: RaychatSettings, green_app: str, say: Say
    ) -> None:
        self.loop = kb._loop_thread()
        self.blue = kb._api(blue_app, blue.knowledge)
        self.green = kb._api(green_app, green.knowledge)
        self.say = say
        self.progress = Progress()
        self.notes: list[str] = []
        self.batch = max(1, green.knowledge.embedding_max_batch_size)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=3600)

    async def _snapshot(self, api: Any) -> Snapshot:
        state: Snapshot = {}
        for info in await api.store("list_kbs"):
            name = info["name"]
            state[name] = {
                "meta": (info.get("description", ""), info.get("source_folder")),
                "docs": await api.store("content_hashes", name),
            }
        return state

    def snapshot(self) -> Snapshot:
        """Blue's knowledge bases and documents now."""
        return self._run(self._snapshot(self.blue))

    def sync(self, since: Snapshot | None = None) -> Snapshot:
        """Makes green's store follow blue's: everything (`since` None), or only what changed on blue
        since the snapshot `since` (green's own later writes are then left alone). Returns the blue
        snapshot it followed."""
        started = time.monotonic()
        before = (self.progress.documents, self.progress.chunks, self.progress.deleted)
        blue = self.snapshot()
        self._run(self._sync(blue, since))
        spent = time.monotonic() - started
        self.progress.seconds += spent
        done = (
            self.progress.documents - before[0],
            self.progress.chunks - before[1],
            self.progress.deleted - before[2],
        )
        self.progress.passes.append(
            {"full": since is None, "documents": done[0], "chunks": done[1], "deleted": done[2], "s": spent}
        )
        self.say(
            f"  re-index pass ({'full' if since is None else 'changes'}): {done[0]} documents, "
            f"{done[1]} chunks, {done[2]} removed in {spent:.1f}s"
        )
        return blue

    async def _sync(self, blue: Snapshot, since: Snapshot | None) -> None:
        """Full (`since` None): green made equal to blue. Changes: what blue created, changed or deleted
        since `since` is done on green too; anything else on green (its own writes) stays."""
        green = await self._snapshot(self.green)
        base = green if since is None else since
        for name in sorted(set(base) - set(blue)):
            if name in green:
                await self.green.store("delete_kb", name)
        for name, state in sorted(blue.items()):
            if name not in green:
                await self._create(name, *state["meta"])
            held = green.get(name, {}).get("docs", {})
            was = base.get(name, {}).get("docs", {})
            changed = [doc for doc, digest in state["docs"].items() if was.get(doc) != digest]
            for doc in [d for d in was if d not in state["docs"] and d in held]:
                await self.green.store("delete_document", name, doc)
                self.progress.deleted += 1
            await self._copy(name, changed)

    async def _create(self, name: str, description: str, folder: str | None) -> None:
        try:
            await self.green.store("create_kb", name, description, folder)
        except APIError as exc:
            if exc.code != "source_folder_not_allowed":
                raise
            # The new settings' knowledge.source_roots leave this folder out: the knowledge base keeps
            # its documents and stops following the folder, as the new settings say.
            await self.green.store("create_kb", name, description, None)
            self.notes.append(f"knowledge base '{name}' no longer follows {folder}: {exc.message}")
            self.say(f"  {self.notes[-1]}")

    async def _copy(self, name: str, docs: list[str]) -> None:
        for i, doc_id in enumerate(docs, 1):
            try:
                fields = await self.blue.store("export_document", name, doc_id)
            except Exception:  # deleted on blue meanwhile: the next pass removes it from green
                continue
            doc = PreparedDocument(**fields)
            vectors = await self.green.embed_bulk(doc.texts)
            self.green._unwrap(await self.green.retriever.write_documents.remote(name, [(doc, vectors)]))
            self.progress.documents += 1
            self.progress.chunks += len(doc.texts)
            if i % 50 == 0 or i == len(docs):
                self.say(f"  re-index '{name}': {i}/{len(docs)} documents")
