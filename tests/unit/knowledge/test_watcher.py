"""Folder sync passes on a real LanceDB store: add, modify, delete, catch-up after downtime."""

from __future__ import annotations

import time
from pathlib import Path

from knowledge.config import KnowledgeSettings
from knowledge.ingest import prepare, write
from knowledge.store import KnowledgeStore
from knowledge.watcher import FolderWatcher, WatchTarget, sync_folder, watchers_to_change

DIM = 3


def make(tmp_path: Path) -> tuple[KnowledgeStore, list[str], object]:
    store = KnowledgeStore(tmp_path / "kb", dim=DIM, fts_tokenizer="simple")
    store.create_kb("f")
    calls: list[str] = []

    def ingest(kb: str, name: str, data: bytes, source: str) -> str:
        calls.append(name)
        doc = prepare(name, data, KnowledgeSettings(), source)
        write(store, kb, doc, [[1.0, 0.0, 0.0]] * len(doc.texts))
        return "ingested"

    return store, calls, ingest


def test_passes_follow_the_folder(tmp_path: Path) -> None:
    store, calls, ingest = make(tmp_path)
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.md").write_text("beta")
    (folder / "skip.exe").write_bytes(b"MZ")
    (folder / ".hidden.txt").write_text("secret")
    first = sync_folder(store, "f", folder, ingest)  # type: ignore[arg-type]
    assert sorted(first.added) == ["a.txt", "sub/b.md"]
    again = sync_folder(store, "f", folder, ingest)  # type: ignore[arg-type]
    assert not again.changed() and again.unchanged == 2 and len(calls) == 2  # hashes: nothing re-ingested
    (folder / "a.txt").write_text("alpha two")
    (folder / "sub" / "b.md").unlink()
    third = sync_folder(store, "f", folder, ingest)  # type: ignore[arg-type]
    assert (third.modified, third.deleted) == (["a.txt"], ["sub/b.md"])
    assert [d["document"] for d in store.documents("f")] == ["a.txt"]


def test_watcher_catches_up_then_follows_events(tmp_path: Path) -> None:
    store, _, ingest = make(tmp_path)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "before.txt").write_text("written while nothing watched")
    watcher = FolderWatcher(store, "f", folder, ingest, debounce_ms=100)  # type: ignore[arg-type]
    watcher.start()
    try:
        deadline = time.monotonic() + 20
        while "before.txt" not in store.content_hashes("f") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "before.txt" in store.content_hashes("f")
        (folder / "after.txt").write_text("written while watched")
        while "after.txt" not in store.content_hashes("f") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(store.content_hashes("f")) == {"before.txt", "after.txt"}
    finally:
        watcher.stop()


def test_watchers_follow_the_knowledge_base_that_exists_now() -> None:
    kbs = [
        {"name": "a", "created_at": 1.0, "source_folder": "/srv/a"},
        {"name": "b", "created_at": 2.0, "source_folder": None},
    ]
    stop, start = watchers_to_change({}, kbs)
    assert (stop, start) == ([], [WatchTarget("a", 1.0, "/srv/a")])
    running = {"a": WatchTarget("a", 1.0, "/srv/a")}
    assert watchers_to_change(running, kbs) == ([], [])  # nothing changed: the watcher keeps running
    # Deleted and created again under the same name between two polls, with another folder or the same one:
    # another knowledge base, so another watcher.
    for folder in ("/srv/a2", "/srv/a"):
        recreated = [{"name": "a", "created_at": 5.0, "source_folder": folder}]
        assert watchers_to_change(running, recreated) == (["a"], [WatchTarget("a", 5.0, folder)])
    assert watchers_to_change(running, []) == (["a"], [])  # deleted
    gone_folder = [{"name": "a", "created_at": 1.0, "source_folder": None}]
    assert watchers_to_change(running, gone_folder) == (["a"], [])
