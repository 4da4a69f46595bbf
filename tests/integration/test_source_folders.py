"""Source folders stay inside `knowledge.source_roots` (default `<data dir>/sources`): `..`, absolute paths
elsewhere and symlinked folders leading out are refused with 400 `source_folder_not_allowed`, a symlinked
file inside a followed folder that leads out is never read, and upload names cannot climb out either."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.test_folder_sync import wait_for


def sources_root(stack: Stack) -> Path:
    root = Path(stack.env["RAYCHAT_DATA_DIR"]) / "sources"
    root.mkdir(parents=True, exist_ok=True)  # `raychat up` makes it; harmless if it did
    return root


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kbs(stack: Stack) -> Iterator[list[str]]:
    """Names of the knowledge bases a test creates; each is deleted afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        stack.http.delete(f"{stack.url}/v1/knowledge_bases/{name}")


def create(stack: Stack, kbs: list[str], name: str, folder: str) -> httpx.Response:
    kbs.append(name)  # deleted afterwards even if the server (wrongly) created it
    return stack.http.post(f"{stack.url}/v1/knowledge_bases", json={"name": name, "source_folder": folder})


def names_listed(stack: Stack) -> set[str]:
    resp = stack.http.get(f"{stack.url}/v1/knowledge_bases")
    assert resp.status_code == 200, resp.text
    return {kb["name"] for kb in resp.json()["data"]}


def assert_refused(resp: httpx.Response, *never_shown: str) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "source_folder_not_allowed", error
    assert error["param"] == "source_folder", error
    for text in never_shown:
        assert text not in resp.text, f"the refusal shows {text!r}"


def search(stack: Stack, kb: str, query: str, mode: str = "fulltext") -> httpx.Response:
    resp = stack.http.post(
        f"{stack.url}/v1/knowledge_bases/{kb}/search",
        json={"query": query, "mode": mode, "top_k": 10},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return resp


def search_docs(stack: Stack, kb: str, query: str) -> dict[str, str]:
    return {h["document"]: h["text"] for h in search(stack, kb, query).json()["data"]}


def documents(stack: Stack, kb: str) -> httpx.Response:
    resp = stack.http.get(f"{stack.url}/v1/knowledge_bases/{kb}/documents")
    assert resp.status_code == 200, resp.text
    return resp


@pytest.fixture
def secret(tmp_path: Path) -> tuple[Path, str]:
    """A file outside every root, with a marker no document of the test stack contains."""
    marker = f"vaultcode{uuid.uuid4().hex[:10]}"
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text(f"The {marker} opens the vault.")
    return path, marker


# --- refusals ------------------------------------------------------------------------------------------
def test_dot_dot_escapes_are_refused(stack: Stack, kbs: list[str]) -> None:
    root = sources_root(stack)
    for folder in ("..", "../..", "../../../etc", f"{root}/../../..", f"{root}/x/../../secrets"):
        name = unique("dotdot")
        assert_refused(create(stack, kbs, name, folder), "BEGIN", "root:x:0:0")
        assert name not in names_listed(stack)


def test_absolute_paths_outside_are_refused(stack: Stack, kbs: list[str]) -> None:
    data_dir = Path(stack.env["RAYCHAT_DATA_DIR"])
    for folder in ("/etc", "/", str(data_dir), str(data_dir / "secrets"), str(data_dir / "knowledge")):
        name = unique("abs")
        resp = create(stack, kbs, name, folder)
        assert_refused(resp, "root:x:0:0")
        assert str(data_dir / "sources") not in resp.text  # the roots are not disclosed either
        assert name not in names_listed(stack)


def test_a_symlinked_folder_leading_out_is_refused(
    stack: Stack, kbs: list[str], secret: tuple[Path, str]
) -> None:
    path, marker = secret
    link = sources_root(stack) / unique("innocent")
    link.symlink_to(path.parent, target_is_directory=True)
    try:
        for folder in (str(link), link.name):  # absolute, and relative to the root
            name = unique("symdir")
            resp = create(stack, kbs, name, folder)
            assert_refused(resp, marker, str(path.parent))
            assert name not in names_listed(stack)
    finally:
        link.unlink()


def test_the_cli_refuses_a_folder_outside(stack: Stack, kbs: list[str], secret: tuple[Path, str]) -> None:
    path, marker = secret
    name = unique("clisync")
    kbs.append(name)
    assert stack.http.post(f"{stack.url}/v1/knowledge_bases", json={"name": name}).status_code == 201
    result = stack.raychat("kb", "sync", name, str(path.parent), timeout=300)
    assert result.returncode != 0
    assert "source_roots" in result.stderr and marker not in result.stdout + result.stderr
    assert all(marker not in text for text in search_docs(stack, name, marker).values())


# --- following -----------------------------------------------------------------------------------------
def test_a_folder_under_the_root_is_followed(stack: Stack, kbs: list[str]) -> None:
    folder = sources_root(stack) / unique("manuals")
    folder.mkdir()
    (folder / "pump.txt").write_text("The feed pump is serviced every quarter.")
    name = unique("follow")
    created = create(stack, kbs, name, folder.name)  # relative: under the first root
    assert created.status_code == 201, created.text
    assert created.json()["source_folder"] == str(folder.resolve())  # the real path is what is kept
    wait_for(lambda: "pump.txt" in search_docs(stack, name, "feed pump"), "file in the followed folder")
    (folder / "valve.md").write_text("# Valve\n\nThe relief valve is tested yearly.")
    wait_for(lambda: "valve.md" in search_docs(stack, name, "relief valve"), "file added later")


def test_a_symlinked_file_leading_out_is_never_read(
    stack: Stack, kbs: list[str], secret: tuple[Path, str]
) -> None:
    path, marker = secret
    folder = sources_root(stack) / unique("leaky")
    folder.mkdir()
    (folder / "good.txt").write_text("The boiler is inspected every winter.")
    (folder / "leak.txt").symlink_to(path)
    (folder / "linked").symlink_to(path.parent, target_is_directory=True)
    name = unique("symfile")
    created = create(stack, kbs, name, str(folder))
    assert created.status_code == 201, created.text

    # good.txt showing up means the pass that met leak.txt has run.
    wait_for(lambda: "good.txt" in search_docs(stack, name, "boiler inspected"), "the good file")
    for _ in range(3):  # and later passes (a file event, the next poll) do not change that
        for mode in ("fulltext", "hybrid", "vector"):
            resp = search(stack, name, marker, mode)
            assert marker not in resp.text and "leak.txt" not in resp.text, mode
        listed = documents(stack, name)
        assert {d["document"] for d in listed.json()["data"]} == {"good.txt"}
        assert marker not in listed.text
        (folder / "good.txt").write_text(f"The boiler is inspected every winter. ({time.time()})")
        time.sleep(2)

    # One pass from the CLI reports the file failed, without its content.
    result = stack.raychat("kb", "sync", name, str(folder), timeout=300)
    assert result.returncode == 1, result.stderr  # a file failed (the CLI's exit status says so)
    assert "leak.txt" in result.stdout and "leads outside" in result.stdout
    assert marker not in result.stdout + result.stderr
    assert all(marker not in text for text in search_docs(stack, name, marker).values())


# --- upload names --------------------------------------------------------------------------------------
def test_upload_names_cannot_climb_out(stack: Stack, kbs: list[str]) -> None:
    name = unique("upnames")
    kbs.append(name)
    assert stack.http.post(f"{stack.url}/v1/knowledge_bases", json={"name": name}).status_code == 201
    url = f"{stack.url}/v1/knowledge_bases/{name}/documents"
    data_dir = Path(stack.env["RAYCHAT_DATA_DIR"])
    escaped = unique("escaped") + ".txt"
    files = [
        ("files", (f"../../../../{escaped}", b"The chiller is flushed in spring.", "text/plain")),
        ("files", ("/etc/cron.d/job.txt", b"The chiller filter is changed monthly.", "text/plain")),
        ("files", ("..\\..\\win.md", b"# Win\n\nThe chiller log.", "text/markdown")),
    ]
    resp = stack.http.post(url, files=files, timeout=300)
    assert resp.status_code == 200, resp.text
    assert [r["document"] for r in resp.json()["data"]] == [escaped, "job.txt", "win.md"]
    for place in (data_dir.parent, data_dir.parent.parent, Path("/etc/cron.d"), Path("/")):
        assert not (place / escaped).exists() and not (place / "job.txt").exists()

    for bad in ("..", "/", "../..", ". /.. /"):  # (httpx sends a NUL as '%00': not tried here)
        refused = stack.http.post(url, files=[("files", (bad, b"x", "text/plain"))], timeout=60)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_file_name"
