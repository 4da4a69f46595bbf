"""Folder sync passes on a real LanceDB store: add, modify, delete, catch-up after downtime."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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
    first = sync_folder(store, "f", folder, ingest, roots=[tmp_path])  # type: ignore[arg-type]
    assert sorted(first.added) == ["a.txt", "sub/b.md"]
    again = sync_folder(store, "f", folder, ingest, roots=[tmp_path])  # type: ignore[arg-type]
    assert not again.changed() and again.unchanged == 2 and len(calls) == 2  # hashes: nothing re-ingested
    (folder / "a.txt").write_text("alpha two")
    (folder / "sub" / "b.md").unlink()
    third = sync_folder(store, "f", folder, ingest, roots=[tmp_path])  # type: ignore[arg-type]
    assert (third.modified, third.deleted) == (["a.txt"], ["sub/b.md"])
    assert [d["document"] for d in store.documents("f")] == ["a.txt"]


def test_watcher_catches_up_then_follows_events(tmp_path: Path) -> None:
    store, _, ingest = make(tmp_path)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "before.txt").write_text("written while nothing watched")
    watcher = FolderWatcher(
        store,
        "f",
        folder,
        ingest,  # type: ignore[arg-type]
        roots=[tmp_path],
        debounce_ms=100,
    )
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


def test_a_file_written_before_the_watcher_is_live_is_not_missed(tmp_path: Path) -> None:
    """The catch-up pass ends, then the file appears, then the watcher starts: no event is ever sent."""
    store, _, ingest = make(tmp_path)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "first.txt").write_text("there from the start")
    watcher = FolderWatcher(store, "f", folder, ingest, roots=[tmp_path], debounce_ms=100)  # type: ignore[arg-type]
    run_pass = watcher.run_pass

    def pass_then_write() -> object:
        report = run_pass()
        if watcher.passes == 1:
            (folder / "late.txt").write_text("written in the window")
        return report

    watcher.run_pass = pass_then_write  # type: ignore[method-assign]
    watcher.start()
    try:
        deadline = time.monotonic() + 20
        while "late.txt" not in store.content_hashes("f") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(store.content_hashes("f")) == {"first.txt", "late.txt"}
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


# --- confined to the source roots ---------------------------------------------------------------------
def test_a_symlinked_file_that_leads_out_is_skipped_never_read(tmp_path: Path) -> None:
    store, calls, ingest = make(tmp_path)
    root = tmp_path / "sources"
    folder = root / "docs"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the vault code is 4711")
    (folder / "leak.txt").symlink_to(secret)
    (folder / "linked-dir").symlink_to(secret.parent, target_is_directory=True)
    report = sync_folder(store, "f", folder, ingest, roots=[root])  # type: ignore[arg-type]
    assert report.added == ["a.txt"] and calls == ["a.txt"]
    assert list(report.failed) == ["leak.txt"] and "leads outside" in report.failed["leak.txt"]
    assert "4711" not in report.failed["leak.txt"] and str(secret) not in report.failed["leak.txt"]
    assert [d["document"] for d in store.documents("f")] == ["a.txt"]
    assert store.search("f", query="vault", vector=None, mode="fulltext") == []


def test_a_file_ingested_before_it_led_out_is_removed(tmp_path: Path) -> None:
    """A knowledge base from before the roots: a link that leads out loses what was read through it."""
    store, _, ingest = make(tmp_path)
    root = tmp_path / "sources"
    folder = root / "docs"
    folder.mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("the vault code is 4711")
    (folder / "leak.txt").write_text("once a plain file")
    assert sync_folder(store, "f", folder, ingest, roots=[root]).added == ["leak.txt"]  # type: ignore[arg-type]
    (folder / "leak.txt").unlink()
    (folder / "leak.txt").symlink_to(secret)
    report = sync_folder(store, "f", folder, ingest, roots=[root])  # type: ignore[arg-type]
    assert (report.deleted, list(report.failed)) == (["leak.txt"], ["leak.txt"])
    assert store.documents("f") == []


def test_an_unreadable_file_keeps_its_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _, ingest = make(tmp_path)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha")
    sync_folder(store, "f", folder, ingest, roots=[tmp_path])  # type: ignore[arg-type]
    import knowledge.watcher as watcher_module

    def unreadable(path: Path, roots: object) -> bytes:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(watcher_module, "read_file", unreadable)
    report = sync_folder(store, "f", folder, ingest, roots=[tmp_path])  # type: ignore[arg-type]
    assert report.failed == {"a.txt": "not read: Permission denied"} and report.deleted == []
    assert [d["document"] for d in store.documents("f")] == ["a.txt"]


def test_a_folder_outside_the_roots_is_skipped_whole(tmp_path: Path) -> None:
    """A knowledge base created before the roots with a folder outside them: nothing read, nothing
    deleted, the report says why."""
    store, calls, ingest = make(tmp_path)
    root = tmp_path / "sources"
    root.mkdir()
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd.txt").write_text("root:x:0:0")
    old = prepare("old.txt", b"ingested while the folder was followed", KnowledgeSettings())
    write(store, "f", old, [[1.0, 0.0, 0.0]] * len(old.texts))
    link = root / "innocent"
    link.symlink_to(outside, target_is_directory=True)
    for folder in (outside, link, root / ".." / "etc"):
        report = sync_folder(store, "f", folder, ingest, roots=[root])  # type: ignore[arg-type]
        assert report.error is not None and "is outside" in report.error
        assert not report.changed() and not report.failed and calls == []
    assert set(store.content_hashes("f")) == {"old.txt"}  # nothing deleted either


def test_the_watcher_creates_watches_and_reads_nothing_outside(tmp_path: Path) -> None:
    store, calls, ingest = make(tmp_path)
    root = tmp_path / "sources"
    root.mkdir()
    outside = tmp_path / "elsewhere" / "new"
    reports: list[object] = []
    watcher = FolderWatcher(
        store,
        "f",
        outside,
        ingest,  # type: ignore[arg-type]
        roots=[root],
        debounce_ms=50,
        on_report=reports.append,
    )
    watcher.start()
    assert watcher._thread is not None
    watcher._thread.join(timeout=10)
    assert not watcher._thread.is_alive()  # it ended instead of watching
    assert not outside.exists() and not outside.parent.exists()  # the old mkdir did not run
    assert len(reports) == 1 and "is outside" in str(getattr(reports[0], "error", ""))
    assert calls == []
