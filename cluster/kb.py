"""Knowledge bases from the operator's side: `raychat kb ingest|sync`, and the in-cluster folder sync.

Everything goes through the running app's Embedding and Retriever deployments, so the CLI, the folder
sync actor and the HTTP API write the same tables the same way. Folders are followed only inside
`knowledge.source_roots` (`knowledge.sources`), whoever asks. File parsing runs in Ray tasks
(`deployments.ingestion`), spread over the cluster's nodes, overlapping with batched embedding and writes.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ray

from cluster.ingress import routing
from cluster.settings import RaychatSettings
from cluster.waiting import wait_until
from knowledge.config import KnowledgeSettings
from knowledge.errors import SourceFolderNotAllowed
from knowledge.ingest import document_id
from knowledge.loaders import LoadError, supported
from knowledge.sources import confine
from knowledge.watcher import FolderWatcher, SyncReport, WatchTarget, sync_folder, watchers_to_change

SYNC_ACTOR = "raychat-kb-sync"


def _api(app_name: str, knowledge: KnowledgeSettings) -> Any:
    from ray import serve

    from deployments.knowledge_api import KnowledgeAPI

    return KnowledgeAPI(
        serve.get_deployment_handle("Embedding", app_name=app_name),
        serve.get_deployment_handle("Retriever", app_name=app_name),
        knowledge,
    )


_LOOP: asyncio.AbstractEventLoop | None = None


def run_on_own_loop(coro: Any) -> Any:
    """`coro` on one event loop kept for the process. Serve's handles bind their router to the loop that
    first used them, so after `asyncio.run()` closed its loop a second call in the same process (a
    benchmark ingesting twice) failed with 'Event loop is closed'."""
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coro)


class StoreClient:
    """The two store calls folder sync needs, made through the Retriever deployment."""

    def __init__(self, api: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.api, self.loop = api, loop

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=600)

    def content_hashes(self, kb: str) -> dict[str, str]:
        return self._run(self.api.store("content_hashes", kb))

    def delete_document(self, kb: str, doc: str) -> bool:
        return bool(self._run(self.api.store("delete_document", kb, doc)))

    def ingest(self, kb: str, name: str, data: bytes, source: str) -> str:
        try:
            # `name` is the folder-relative id the scan made, so its folders are kept.
            result = self._run(self.api.upload(kb, [(name, data)], keep_paths=True))[0]
        except Exception as exc:  # an APIError (type, size) fails this file only
            return f"failed: {getattr(exc, 'message', exc)}"
        return result["status"] if result["status"] != "failed" else f"failed: {result.get('error')}"


def _loop_thread() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="kb-client-loop").start()
    return loop


def collect_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and supported(p)]
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{raw}: no such file or directory")
    return files


def ingest_paths(
    settings: RaychatSettings,
    kb: str,
    paths: list[str],
    *,
    create: bool = True,
    embed: Callable[[list[str]], Awaitable[list[list[float]]]] | None = None,
) -> dict[str, Any]:
    """`raychat kb ingest NAME PATH...`: every file through one `IngestPipeline` run (parsing in Ray
    tasks, batched embedding and batched writes overlapping), a progress line, a summary. `embed`: an
    embedder of the caller's own (the ingest job's dedicated one) instead of the Embedding deployment."""
    api = _api(routing.live_app(settings), settings.knowledge)
    files = collect_files(paths)
    shown = [0.0]

    def progress(p: Any) -> None:
        now = time.monotonic()
        if now - shown[0] < 0.5 and p.done < p.files:
            return
        shown[0] = now
        line = p.as_dict()
        print(
            f"\r  [{p.done}/{p.files}] files, {p.chunks} chunks ({line['chunks_per_s']:.0f} chunks/s), "
            f"{p.failed} failed",
            end="",
            file=sys.stderr,
            flush=True,
        )

    async def run() -> list[dict[str, Any]]:
        names = {k["name"] for k in await api.store("list_kbs")}
        if kb not in names:
            if not create:
                raise SystemExit(f"knowledge base {kb!r} does not exist")
            await api.store("create_kb", kb, "", None)
        limit = settings.knowledge.max_file_bytes
        sources = [(_display_name(p, paths), _reader(p, limit)) for p in files]
        pipeline = await api.pipeline(kb, _doc_ids([name for name, _ in sources]), progress, embed)
        results = await pipeline.run(sources)
        timing.update({k: v for k, v in pipeline.progress.as_dict().items() if k.endswith("_s")})
        return results

    timing: dict[str, Any] = {}
    results = run_on_own_loop(run())
    print(file=sys.stderr)
    summary: dict[str, Any] = {"ingested": 0, "unchanged": 0, "failed": 0, "chunks": 0}
    for result in results:
        summary[result["status"]] += 1
        summary["chunks"] += int(result.get("chunks", 0))
        if result["status"] == "failed":
            print(f"  failed {result['document']}: {result.get('error')}", file=sys.stderr)
    return summary | timing


def _doc_ids(names: list[str]) -> list[str]:
    """The document ids these names become (a name with none fails in the pipeline, with its reason)."""
    ids = []
    for name in names:
        try:
            ids.append(document_id(name))
        except LoadError:
            continue
    return ids


def _reader(path: Path, limit: int) -> Callable[[], bytes]:
    """The file's bytes when the pipeline gets to it; a file over the upload limit fails unread."""

    def read() -> bytes:
        size = path.stat().st_size
        if size > limit:
            raise LoadError(f"{path.name}: {size} bytes exceeds the limit of {limit}")
        return path.read_bytes()

    return read


def _display_name(path: Path, roots: list[str]) -> str:
    for root in roots:
        base = Path(root)
        if base.is_dir():
            try:
                return path.resolve().relative_to(base.resolve()).as_posix()
            except ValueError:
                continue
    return path.name


def sync_once(settings: RaychatSettings, kb: str, folder: str) -> SyncReport:
    """`raychat kb sync NAME FOLDER`: one pass, the same comparison the in-cluster watcher makes, on a
    folder inside `knowledge.source_roots`. A relative FOLDER is relative to the working directory, as in
    any shell command (not to the first root, as over HTTP): a pass deletes what the folder lacks, so it
    must be the folder the operator sees."""
    roots = settings.knowledge.source_roots
    try:
        real = confine(Path(folder).absolute(), roots)
    except SourceFolderNotAllowed as exc:
        raise SystemExit(f"raychat kb sync: {exc}") from None
    client = StoreClient(_api(routing.live_app(settings), settings.knowledge), _loop_thread())
    return sync_folder(client, kb, real, client.ingest, roots=roots)  # type: ignore[arg-type]


@ray.remote(num_cpus=0)
class KnowledgeSync:
    """Watches the source folder of every knowledge base that has one (detached; `raychat up` starts it)."""

    def __init__(self, app_name: str, knowledge: dict[str, Any], poll_s: float = 2.0) -> None:
        self._settings = KnowledgeSettings.model_validate(knowledge)
        self._app_name = app_name
        self._poll_s = poll_s
        self._watchers: dict[str, FolderWatcher] = {}
        self._targets: dict[str, WatchTarget] = {}  # what each running watcher was started for
        self._reports: dict[str, dict[str, Any]] = {}
        self._loop = _loop_thread()
        threading.Thread(target=self._supervise, daemon=True, name="kb-sync-supervisor").start()

    def _supervise(self) -> None:
        api = _api(self._app_name, self._settings)
        client = StoreClient(api, self._loop)
        while True:
            try:
                self._reconcile(client, client._run(api.store("list_kbs")))
            except Exception as exc:  # the app may be (re)deploying: try again next round
                print(f"kb sync supervisor: {type(exc).__name__}: {exc}", file=sys.stderr)
            time.sleep(self._poll_s)

    def _reconcile(self, client: StoreClient, kbs: list[dict[str, Any]]) -> None:
        """One watcher per knowledge base that exists now with a folder. Keyed by name, created_at and
        folder: a knowledge base recreated under the same name between two polls gets a new watcher."""
        stop, start = watchers_to_change(self._targets, kbs)
        for name in stop:  # before starting its successor, so one name never has two watchers
            del self._targets[name]
            self._reports.pop(name, None)
            self._watchers.pop(name).stop()
        for target in start:
            watcher = FolderWatcher(
                client,
                target.kb,
                Path(target.folder),
                client.ingest,  # type: ignore[arg-type]
                roots=self._settings.source_roots,
                debounce_ms=self._settings.sync_debounce_ms,
                on_report=lambda r, n=target.kb: self._record(n, r),
            )
            watcher.start()
            self._watchers[target.kb] = watcher
            self._targets[target.kb] = target

    def _record(self, name: str, report: SyncReport) -> None:
        self._reports[name] = {
            "at": time.time(),
            "added": report.added,
            "modified": report.modified,
            "deleted": report.deleted,
            "failed": report.failed,
            "error": report.error,  # the folder is outside knowledge.source_roots: not followed
        }

    def status(self) -> dict[str, Any]:
        return {
            name: {"passes": w.passes, "folder": str(w.folder), "last": self._reports.get(name)}
            for name, w in self._watchers.items()
        }


def start_sync_actor(settings: RaychatSettings, *, restart: bool = False) -> Any:
    """The folder-sync actor; `restart` replaces a running one (after a redeploy it must run the same
    code and settings as the app it calls)."""
    if restart:
        try:
            ray.kill(ray.get_actor(SYNC_ACTOR, namespace=settings.ray.namespace))
        except ValueError:
            pass  # none running
        else:

            def gone() -> bool:
                try:
                    ray.get_actor(SYNC_ACTOR, namespace=settings.ray.namespace)
                except ValueError:
                    return True
                return False

            wait_until(gone, timeout_s=30, interval_s=0.2, what="the old folder-sync actor has stopped")
    return KnowledgeSync.options(
        name=SYNC_ACTOR,
        namespace=settings.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
        resources=settings.placement.head_resources(),  # the followed folders are on the head's disk
    ).remote(routing.live_app(settings), settings.knowledge.model_dump(mode="json"))
