"""Folder sync passes on a real LanceDB store: add, modify, delete, catch-up after downtime."""

from __future__ import annotations

import time
from pathlib import Path

from knowledge.config import KnowledgeSettings
from knowledge.ingest import prepare, write
from knowledge.store import KnowledgeStore
from knowledge.watcher import FolderWatcher, sync_folder

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
