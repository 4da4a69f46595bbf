"""Deleted rows removed for good, on a timer.

A delete only marks rows (one cheap commit that hides them from every query at once); `KnowledgeStore.compact`
drops the marked rows and rewrites the table's files. Compaction rewrites what writes append to, so it shares
one lock with the writers; searches never take it and keep reading the version they opened. The store calls
block, so they run in threads and the event loop (a Serve replica's) keeps answering.
"""

from __future__ import annotations

import asyncio
import logging

from knowledge.errors import KnowledgeBaseNotFound
from knowledge.store import KnowledgeStore

log = logging.getLogger("raychat.compaction")


class Compactor:
    def __init__(self, store: KnowledgeStore, interval_s: float, writes: asyncio.Lock) -> None:
        self.store = store
        self.interval_s = interval_s
        self.writes = writes
        # (created_at, version) of each knowledge base at its last compaction: one nothing was written to
        # since has nothing to remove, and rewriting its files every round would cost CPU for nothing.
        self._compacted: dict[str, tuple[float, int]] = {}

    async def run_once(self) -> dict[str, int]:
        """Compact every knowledge base written since its last compaction; returns rows removed by name.
        A failure is logged and that knowledge base is tried again next round."""
        kbs = await asyncio.to_thread(self.store.list_kbs)
        removed: dict[str, int] = {}
        for kb in kbs:
            name = kb["name"]
            # Read before compacting: a write landing meanwhile moves the version, so next round sees it.
            state = (float(kb["created_at"]), int(kb["version"]))
            if self._compacted.get(name) == state:
                continue
            try:
                async with self.writes:
                    removed[name] = await asyncio.to_thread(self.store.compact, name)
            except KnowledgeBaseNotFound:  # deleted since the listing: nothing left to compact
                continue
            except Exception:
                log.exception("compacting knowledge base %s failed", name)
                continue
            self._compacted[name] = state
        for gone in self._compacted.keys() - {kb["name"] for kb in kbs}:
            del self._compacted[gone]
        return removed

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                removed = await self.run_once()
            except Exception:  # listing failed (disk, registry): the next round tries again
                log.exception("compaction round failed")
                continue
            if any(removed.values()):
                log.info("compaction removed %s", {k: v for k, v in removed.items() if v})
