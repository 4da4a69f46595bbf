"""The Retriever deployment's class without Ray: which store methods `call` runs, and the compaction task
its constructor starts (a deleted document's rows leave the table, with no call asking for it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from deployments.retriever import Retriever
from knowledge.config import KnowledgeSettings
from knowledge.ingest import prepare


class FakeEmbedding:
    """Stands for the Embedding deployment's handle: the constructor only asks for the dimension."""

    class _Info:
        async def remote(self) -> dict[str, Any]:
            return {"dim": 3}

    info = _Info()


def test_call_runs_used_methods_and_the_timer_compacts(tmp_path: Path) -> None:
    settings = KnowledgeSettings(fts_tokenizer="simple", compact_interval_s=0.05)

    async def scenario() -> None:
        retriever = Retriever.func_or_class.__new__(Retriever.func_or_class)
        await retriever.__init__(FakeEmbedding(), settings.model_dump(mode="json"), str(tmp_path / "kb"))
        try:
            assert "ok" in await retriever.call("create_kb", "docs", "", None)
            docs = [prepare(n, f"pump note {n}".encode(), settings) for n in ("a.txt", "b.txt")]
            written = await retriever.write_documents("docs", [(d, [[1.0, 0.0, 0.0]]) for d in docs])
            assert [r["status"] for r in written["ok"]] == ["ingested", "ingested"]
            assert (await retriever.call("delete_document", "docs", "a.txt"))["ok"] is True
            for method in ("compact", "version", "replace_document", "_write_meta"):
                assert (await retriever.call(method, "docs"))["error"] == "StoreError", method
            for _ in range(100):  # the constructor's task compacts every 0.05 s
                listed = (await retriever.call("documents", "docs", include_deleted=True))["ok"]
                if [d["document"] for d in listed] == ["b.txt"]:
                    break
                await asyncio.sleep(0.05)
            assert [d["document"] for d in listed] == ["b.txt"]
            hits = await retriever.search("docs", "pump", [1.0, 0.0, 0.0], "hybrid", 5)
            assert [h["document"] for h in hits["ok"]] == ["b.txt"]
        finally:
            retriever._compaction.cancel()

    asyncio.run(scenario())
