"""The Retriever deployment: the LanceDB knowledge store, one writer replica, called through a handle.

With `knowledge.reranker_model` set, a search takes `knowledge.rerank_depth` candidates and keeps the
`top_k` a cross-encoder scores best (`knowledge/rerank.py`). It also compacts every
`knowledge.compact_interval_s` (deleted rows removed for good). Writes and compaction
take one lock, so they never overlap; reads and searches take none and keep answering during a compaction.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from knowledge import rerank
from knowledge.compaction import Compactor
from knowledge.config import KnowledgeSettings
from knowledge.ingest import IngestResult, PreparedDocument, write_many
from knowledge.rerank import Reranker
from knowledge.store import KnowledgeStore, StoreError

# The store methods `call` runs: what the gateway, the CLI and folder sync use, nothing more.
READS = frozenset({"list_kbs", "get_kb", "documents", "content_hashes", "export_document"})
WRITES = frozenset({"create_kb", "delete_kb", "delete_document"})


@serve.deployment(name="Retriever")
class Retriever:
    async def __init__(self, embedding: DeploymentHandle, settings: dict[str, Any], store_dir: str) -> None:
        cfg = KnowledgeSettings.model_validate(settings)
        info = await embedding.info.remote()
        # source_roots: absolute, the settings resolve them against the data dir
        self.store = KnowledgeStore.from_settings(Path(store_dir), int(info["dim"]), cfg)
        self._reranker = Reranker.from_settings(cfg)
        self._writes = asyncio.Lock()
        self._compactor = Compactor(self.store, cfg.compact_interval_s, self._writes)
        # Serve awaits this constructor on the replica's event loop, which runs the task from now on; the
        # reference keeps it from being garbage-collected.
        self._compaction = asyncio.get_running_loop().create_task(self._compactor.run_forever())

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Store errors travel back as values, named by their class (`KnowledgeBaseNotFound`,
        `SourceFolderNotAllowed`, ...): `KnowledgeAPI._unwrap` maps them to status codes."""
        try:
            return {"ok": await asyncio.to_thread(fn, *args, **kwargs)}
        except StoreError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

    async def call(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if method in READS:
            return await self._run(getattr(self.store, method), *args, **kwargs)
        if method in WRITES:
            async with self._writes:
                return await self._run(getattr(self.store, method), *args, **kwargs)
        return {"error": "StoreError", "message": f"unknown store method {method}"}

    async def search(
        self,
        kb: str,
        query: str,
        vector: list[float] | None,
        mode: str,
        top_k: int,
        score_threshold: float | None = None,
        filters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        result = await self._run(
            rerank.search,
            self.store,
            self._reranker,
            kb,
            query=query,
            vector=vector,
            mode=mode,
            top_k=top_k,
            score_threshold=score_threshold,
            filters=filters,
        )
        if "ok" in result:
            result["ok"] = [hit.as_dict() for hit in result["ok"]]
        return result

    async def write_documents(
        self, kb: str, docs: list[tuple[PreparedDocument, list[list[float]]]]
    ) -> dict[str, Any]:
        def _write_all() -> list[dict[str, Any]]:
            self.store.get_kb(kb)
            counts = write_many(self.store, kb, docs)
            self.store.refresh_indexes(kb)
            return [
                IngestResult(doc.doc_id, "ingested", n).as_dict()
                for (doc, _), n in zip(docs, counts, strict=True)
            ]

        async with self._writes:
            return await self._run(_write_all)
