"""Compaction on a real LanceDB store: deleted rows leave the table, searches keep answering meanwhile, and
the timer compacts under the writers' lock, skips what nothing was written to, and survives failures."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import lancedb
import pytest

from knowledge.compaction import Compactor
from knowledge.errors import KnowledgeBaseNotFound
from knowledge.store import ChunkRecord, KnowledgeStore

DIM = 4


def vec(i: int) -> list[float]:
    raw = [1.0, (i % 7) / 7, (i % 5) / 5, (i % 3) / 3]
    norm = sum(x * x for x in raw) ** 0.5
    return [x / norm for x in raw]


def put(store: KnowledgeStore, kb: str, doc: str, chunks: int = 2) -> None:
    records = [
        ChunkRecord(i, f"pump note {doc} part {i}", vec(sum(map(ord, doc)) + i)) for i in range(chunks)
    ]
    store.replace_document(kb, doc, "h", records, source=doc, title=doc)


def table_rows(root: Path, kb: str) -> int:
    """Rows in the table as another process sees it: every row, marked deleted or not."""
    return lancedb.connect(str(root)).open_table(f"kb_{kb}").count_rows()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "kb"


@pytest.fixture
def store(root: Path) -> KnowledgeStore:
    s = KnowledgeStore(root, dim=DIM, fts_tokenizer="simple")
    s.create_kb("docs")
    return s


def test_deleted_rows_leave_the_table(store: KnowledgeStore, root: Path) -> None:
    put(store, "docs", "a.txt", chunks=3)
    put(store, "docs", "b.txt", chunks=2)
    store.build_indexes("docs")
    assert store.delete_document("docs", "a.txt")
    assert table_rows(root, "docs") == 5  # marked, still there
    assert store.compact("docs") == 3
    assert table_rows(root, "docs") == 2
    assert [d["document"] for d in store.documents("docs", include_deleted=True)] == ["b.txt"]
    for mode in ("vector", "fulltext", "hybrid"):  # the indexes still answer over what is left
        hits = store.search("docs", query="pump note", vector=vec(1), mode=mode, top_k=5)
        assert {h.document for h in hits} == {"b.txt"}, mode


def test_searches_keep_answering_during_compaction(store: KnowledgeStore, root: Path) -> None:
    docs = [f"doc{i}" for i in range(60)]
    for doc in docs:
        put(store, "docs", doc)
    store.build_indexes("docs")
    compacting = threading.Event()
    stop = threading.Event()
    errors: list[str] = []
    counts: list[int] = []
    during = [0]

    def reader(mode: str) -> None:
        while not stop.is_set():
            try:
                hits = store.search("docs", query="pump note", vector=vec(1), mode=mode, top_k=5)
            except Exception as exc:  # any failure at all is what this test is about
                errors.append(f"{mode}: {type(exc).__name__}: {exc}")
                continue
            counts.append(len(hits))
            if compacting.is_set():
                during[0] += 1

    threads = [threading.Thread(target=reader, args=(m,)) for m in ("vector", "fulltext", "hybrid")]
    for t in threads:
        t.start()
    try:
        for round_ in range(3):  # three rounds: each compacts a table the previous one rewrote
            for doc in docs[round_ * 10 : round_ * 10 + 10]:
                store.delete_document("docs", doc)
            compacting.set()
            assert store.compact("docs") == 20
            compacting.clear()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert counts and all(n == 5 for n in counts)  # 30 live documents left: always a full page
    assert during[0] > 0  # searches did complete while a compaction ran
    assert table_rows(root, "docs") == 60
    hits = store.search("docs", query="pump note", vector=vec(1), mode="hybrid", top_k=100)
    assert {h.document for h in hits} == set(docs[30:])


def test_timer_compacts_under_the_writers_lock_and_skips_unchanged(store: KnowledgeStore, root: Path) -> None:
    store.create_kb("other")
    put(store, "docs", "a.txt")
    put(store, "docs", "b.txt")
    store.delete_document("docs", "a.txt")
    held: list[bool] = []
    compact = store.compact

    def checked_compact(name: str) -> int:
        held.append(writes.locked())  # no write can run while this one does
        return compact(name)

    store.compact = checked_compact  # type: ignore[method-assign]

    async def scenario() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        compactor = Compactor(store, 3600, writes)
        await writes.acquire()  # a write in progress: compaction waits for it
        first = asyncio.create_task(compactor.run_once())
        await asyncio.sleep(0.2)
        assert not first.done() and table_rows(root, "docs") == 4
        writes.release()
        done = await first
        again = await compactor.run_once()  # nothing written since: nothing to do
        store.delete_document("docs", "b.txt")
        after_write = await compactor.run_once()
        return done, again, after_write

    writes = asyncio.Lock()
    done, again, after_write = asyncio.run(scenario())
    assert done == {"docs": 2, "other": 0}
    assert again == {}
    assert after_write == {"docs": 2}
    assert held == [True, True, True]
    assert table_rows(root, "docs") == 0


def test_a_failure_is_logged_and_retried(
    store: KnowledgeStore, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.create_kb("broken")
    put(store, "docs", "a.txt")
    store.delete_document("docs", "a.txt")
    compact = store.compact
    failures = {"broken": 2}

    def flaky_compact(name: str) -> int:
        if failures.get(name):
            failures[name] -= 1
            raise OSError("disk hiccup")
        return compact(name)

    store.compact = flaky_compact  # type: ignore[method-assign]
    list_kbs = store.list_kbs
    listing_failures = [1]

    def flaky_list() -> list[dict[str, object]]:
        if listing_failures[0]:
            listing_failures[0] -= 1
            raise OSError("registry unreadable")
        return list_kbs()

    store.list_kbs = flaky_list  # type: ignore[method-assign]

    async def scenario() -> None:
        compactor = Compactor(store, 0.01, asyncio.Lock())
        task = asyncio.create_task(compactor.run_forever())
        for _ in range(500):  # until both knowledge bases got compacted despite the failures
            await asyncio.sleep(0.02)
            if not failures["broken"] and table_rows(root, "docs") == 0 and not task.done():
                break
        assert not task.done()  # the timer never dies
        task.cancel()

    with caplog.at_level(logging.ERROR, logger="raychat.compaction"):
        asyncio.run(scenario())
    assert failures["broken"] == 0 and table_rows(root, "docs") == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "compaction round failed" in messages
    assert messages.count("compacting knowledge base broken failed") == 2


def test_a_knowledge_base_deleted_meanwhile_is_skipped_quietly(
    store: KnowledgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    listing = store.list_kbs()
    store.delete_kb("docs")
    store.list_kbs = lambda: listing  # type: ignore[method-assign]  # listed just before the delete
    with caplog.at_level(logging.ERROR, logger="raychat.compaction"):
        assert asyncio.run(Compactor(store, 3600, asyncio.Lock()).run_once()) == {}
    assert caplog.records == []
    with pytest.raises(KnowledgeBaseNotFound):
        store.compact("docs")
