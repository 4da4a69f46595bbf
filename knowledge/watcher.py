"""Folder sync: a knowledge base follows a folder. Added -> ingested, modified -> replaced, deleted ->
marked deleted. Each pass compares content hashes with the store, so a pass after a restart catches up on
whatever changed while nothing was watching; file events only decide *when* to run a (debounced) pass.

Only inside `knowledge.source_roots` (`knowledge.sources`): every pass checks the folder's real path again
(a knowledge base created before the roots existed, or a folder since replaced by a link, is skipped whole),
and a file is read only if its real path stays inside too; one that leads out is reported failed, its
earlier chunks (if any) are marked deleted, and its content is never read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.errors import SourceFolderNotAllowed
from knowledge.ingest import content_hash, document_id
from knowledge.loaders import supported
from knowledge.sources import read_file, resolve_inside
from knowledge.store import KnowledgeStore

log = logging.getLogger("raychat.watcher")

# (kb, relative name, bytes, absolute source path) -> status string ("ingested", "failed: ...")
IngestFn = Callable[[str, str, bytes, str], str]


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unchanged: int = 0
    error: str | None = None  # the whole folder was skipped (outside the source roots): nothing touched

    def changed(self) -> bool:
        return bool(self.added or self.modified or self.deleted)


@dataclass(frozen=True)
class WatchTarget:
    """What a watcher follows: one knowledge base as it exists now and its folder. A knowledge base deleted
    and created again under the same name is another one (a new `created_at`), perhaps with another folder,
    so the name alone cannot tell whether a running watcher still serves it."""

    kb: str
    created_at: float
    folder: str


def watch_targets(kbs: Iterable[Mapping[str, Any]]) -> dict[str, WatchTarget]:
    """The targets of the knowledge bases that have a source folder (`list_kbs` rows), by name."""
    return {
        kb["name"]: WatchTarget(kb["name"], float(kb["created_at"]), str(kb["source_folder"]))
        for kb in kbs
        if kb.get("source_folder")
    }


def watchers_to_change(
    running: Mapping[str, WatchTarget], kbs: Iterable[Mapping[str, Any]]
) -> tuple[list[str], list[WatchTarget]]:
    """(names whose watcher must stop, targets to start watching): a watcher stops when its knowledge base
    is gone, lost its folder, or is not the one it was started for; the new one starts in its place."""
    wanted = watch_targets(kbs)
    stop = sorted(name for name, target in running.items() if wanted.get(name) != target)
    start = [target for name, target in sorted(wanted.items()) if running.get(name) != target]
    return stop, start


def scan(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if (
            path.is_file()
            and supported(path)
            and not any(p.startswith(".") for p in path.relative_to(folder).parts)
        ):
            files[document_id(path.relative_to(folder).as_posix())] = path
    return files


def sync_folder(
    store: KnowledgeStore, kb: str, folder: Path, ingest: IngestFn, *, roots: Sequence[Path]
) -> SyncReport:
    """One pass over `folder`, which must lie inside `roots` (else the report's `error` says so and
    nothing is read or changed). A missing folder inside the roots holds no files."""
    try:
        real = resolve_inside(folder, roots)
    except SourceFolderNotAllowed as exc:
        return SyncReport(error=str(exc))
    report = SyncReport()
    known = store.content_hashes(kb)
    present = scan(real)
    kept: set[str] = set()  # documents still in the folder, read or not
    for doc, path in present.items():
        try:
            data = read_file(path, roots)
        except SourceFolderNotAllowed as exc:  # a link leading out: never read, and not the folder's
            report.failed[doc] = str(exc)
            continue
        except OSError as exc:  # vanished or unreadable between scan and read: next pass sees it
            report.failed[doc] = f"not read: {exc.strerror or type(exc).__name__}"
            kept.add(doc)
            continue
        kept.add(doc)
        digest = content_hash(data)
        if known.get(doc) == digest:
            report.unchanged += 1
            continue
        status = ingest(kb, doc, data, str(path))
        if status.startswith("failed"):
            report.failed[doc] = status
        elif doc in known:
            report.modified.append(doc)
        else:
            report.added.append(doc)
    for doc in known.keys() - kept:
        if store.delete_document(kb, doc):
            report.deleted.append(doc)
    return report


class FolderWatcher:
    """Runs `sync_folder` at start (catch-up), then after each debounced burst of file events."""

    def __init__(
        self,
        store: KnowledgeStore,
        kb: str,
        folder: Path,
        ingest: IngestFn,
        *,
        roots: Sequence[Path],
        debounce_ms: int = 500,
        on_report: Callable[[SyncReport], None] | None = None,
    ) -> None:
        self.store, self.kb, self.folder, self.ingest = store, kb, Path(folder), ingest
        self.roots = list(roots)
        self.debounce_ms = debounce_ms
        self.on_report = on_report
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def run_pass(self) -> SyncReport:
        report = sync_folder(self.store, self.kb, self.folder, self.ingest, roots=self.roots)
        self.passes += 1
        if report.error:
            log.warning("kb %s: folder not followed: %s", self.kb, report.error)
        elif report.changed() or report.failed:
            log.info(
                "kb %s: +%d ~%d -%d failed %d",
                self.kb,
                len(report.added),
                len(report.modified),
                len(report.deleted),
                len(report.failed),
            )
        if self.on_report:
            self.on_report(report)
        return report

    def _loop(self) -> None:
        from watchfiles import watch

        try:
            real = resolve_inside(self.folder, self.roots)
        except SourceFolderNotAllowed:
            self._safe_pass()  # reports why, once; nothing outside is created, read or watched
            return
        real.mkdir(parents=True, exist_ok=True)
        self._safe_pass()
        # A file written after the catch-up pass read the folder but before the watcher below is live
        # sends no event: one more pass once it is live (its first quiet second) closes that window.
        live = False
        for changes in watch(
            real,
            debounce=self.debounce_ms,
            stop_event=self._stop,
            rust_timeout=1000,
            yield_on_timeout=True,
        ):
            if changes or not live:
                live = True
                self._safe_pass()

    def _safe_pass(self) -> None:
        try:
            self.run_pass()
        except Exception:  # a failed pass must not end the watcher; the next event retries
            log.exception("sync pass for kb %s failed", self.kb)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"watch-{self.kb}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
