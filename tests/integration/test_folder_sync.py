"""A knowledge base follows its source folder inside the running cluster; `raychat kb sync` does one pass."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, Stack

SOURCES = ROOT / ".test-data" / "sources"  # the default knowledge.source_roots of the test stack

BOUND_S = 60  # how long a change may take to show up in search


def last_json(stdout: str) -> dict[str, object]:
    """The CLI's JSON summary: its last JSON line (Ray may print its own warnings around it)."""
    return next(json.loads(line) for line in reversed(stdout.splitlines()) if line.startswith("{"))


def search_docs(stack: Stack, kb: str, query: str) -> dict[str, str]:
    resp = stack.http.post(
        f"{stack.url}/v1/knowledge_bases/{kb}/search",
        json={"query": query, "mode": "fulltext", "top_k": 10},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return {h["document"]: h["text"] for h in resp.json()["data"]}


def wait_for(check: Callable[[], bool], what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < BOUND_S:
        if check():
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {BOUND_S}s")


def test_folder_follows_add_modify_delete(stack: Stack) -> None:
    folder = SOURCES / f"folder-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    kb = f"sync-{uuid.uuid4().hex[:6]}"
    created = stack.http.post(
        f"{stack.url}/v1/knowledge_bases", json={"name": kb, "source_folder": str(folder)}
    )
    assert created.status_code == 201, created.text

    (folder / "turbine.txt").write_text("The turbine inspection happens every spring.")
    wait_for(lambda: "turbine.txt" in search_docs(stack, kb, "turbine inspection"), "added file")

    (folder / "turbine.txt").write_text("The turbine overhaul happens every autumn.")
    wait_for(lambda: "autumn" in search_docs(stack, kb, "turbine").get("turbine.txt", ""), "modified file")
    assert "spring" not in search_docs(stack, kb, "turbine").get("turbine.txt", "")

    (folder / "turbine.txt").unlink()
    wait_for(lambda: "turbine.txt" not in search_docs(stack, kb, "turbine"), "deleted file")
    time.sleep(3)  # a deleted document never comes back
    assert "turbine.txt" not in search_docs(stack, kb, "turbine")


def test_cli_sync_pass_catches_up(stack: Stack) -> None:
    tmp_path = SOURCES / f"cli-{uuid.uuid4().hex[:6]}"  # a followed folder lies inside knowledge.source_roots
    tmp_path.mkdir(parents=True)
    kb = f"cli-{uuid.uuid4().hex[:6]}"
    assert stack.http.post(f"{stack.url}/v1/knowledge_bases", json={"name": kb}).status_code == 201
    (tmp_path / "a.txt").write_text("compressor manual alpha")
    (tmp_path / "b.md").write_text("# B\n\ncompressor manual beta")
    first = stack.raychat("kb", "sync", kb, str(tmp_path), timeout=300)
    assert first.returncode == 0, first.stderr
    assert sorted(last_json(first.stdout)["added"]) == ["a.txt", "b.md"]
    (tmp_path / "a.txt").write_text("compressor manual alpha, revised")
    (tmp_path / "b.md").unlink()
    second = last_json(stack.raychat("kb", "sync", kb, str(tmp_path), timeout=300).stdout)
    assert (second["modified"], second["deleted"]) == (["a.txt"], ["b.md"])
    assert set(search_docs(stack, kb, "compressor")) == {"a.txt"}


def test_cli_ingest_parallel_with_summary(stack: Stack, tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / f"doc{i}.txt").write_text(f"generator maintenance note number {i}")
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    kb = f"ing-{uuid.uuid4().hex[:6]}"
    result = stack.raychat("kb", "ingest", kb, str(tmp_path), timeout=300)
    summary = last_json(result.stdout)
    assert summary["ingested"] == 6 and summary["failed"] == 1 and summary["chunks"] >= 6
    assert result.returncode == 1  # a failed file is reported, not hidden
    assert "files" in result.stderr  # progress was shown


def test_recreated_kb_follows_its_new_folder(stack: Stack) -> None:
    base = SOURCES / f"refolder-{uuid.uuid4().hex[:6]}"
    first, second = base / "first", base / "second"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    kb = f"resync-{uuid.uuid4().hex[:6]}"
    url = f"{stack.url}/v1/knowledge_bases"
    assert stack.http.post(url, json={"name": kb, "source_folder": str(first)}).status_code == 201
    (first / "old.txt").write_text("The heat exchanger note kept in the first folder.")
    wait_for(lambda: "old.txt" in search_docs(stack, kb, "exchanger"), "file in the first folder")

    # Delete, recreate under the same name with another folder, add a file there: a few fast calls, well
    # inside the supervisor's 2 s poll, so it never sees the name missing, only another knowledge base.
    assert stack.http.delete(f"{url}/{kb}").status_code == 200
    assert stack.http.post(url, json={"name": kb, "source_folder": str(second)}).status_code == 201
    (second / "new.txt").write_text("The heat exchanger note kept in the second folder.")
    wait_for(lambda: "new.txt" in search_docs(stack, kb, "exchanger"), "file in the new folder")
    assert set(search_docs(stack, kb, "exchanger")) == {"new.txt"}  # nothing of the old folder
