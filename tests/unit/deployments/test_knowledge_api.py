"""KnowledgeAPI without Ray: store errors become OpenAI errors (a refused source folder is a 400
`source_folder_not_allowed`), and uploaded file names are made safe before they become document ids."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from deployments import ingestion
from deployments.gateway.protocol import APIError
from deployments.knowledge_api import KnowledgeAPI
from deployments.retriever import Retriever
from knowledge.config import KnowledgeSettings
from knowledge.ingest import prepare


class _Remote:
    """A handle method: `.remote(...)` returns an awaitable, as a DeploymentHandle's does."""

    def __init__(self, fn: Any) -> None:
        self.remote = fn


class FakeEmbedding:
    def __init__(self) -> None:
        async def info() -> dict[str, Any]:
            return {"dim": 3}

        async def embed(texts: list[str]) -> list[list[float]]:
            return [[1.0, 0.0, 0.0] for _ in texts]

        self.info = _Remote(info)
        self.embed = _Remote(embed)
        self.embed_bulk = _Remote(embed)


class RetrieverHandle:
    def __init__(self, retriever: Any) -> None:
        self.call = _Remote(retriever.call)
        self.write_documents = _Remote(retriever.write_documents)
        self.search = _Remote(retriever.search)


def error_of(result: dict[str, Any]) -> APIError:
    with pytest.raises(APIError) as info:
        KnowledgeAPI._unwrap(result)
    return info.value


def test_store_errors_become_api_errors() -> None:
    refused = error_of({"error": "SourceFolderNotAllowed", "message": "source_folder '/etc' is outside x"})
    assert (refused.status, refused.code, refused.param) == (
        400,
        "source_folder_not_allowed",
        "source_folder",
    )
    missing = error_of({"error": "KnowledgeBaseNotFound", "message": "knowledge base 'x' does not exist"})
    assert (missing.status, missing.code) == (404, "knowledge_base_not_found")
    exists = error_of({"error": "StoreError", "message": "knowledge base 'x' already exists"})
    assert (exists.status, exists.code) == (409, "already_exists")
    # A refused folder whose name says "already exists" is still a refused folder, not a conflict.
    sneaky = error_of({"error": "SourceFolderNotAllowed", "message": "source_folder 'already exists' is x"})
    assert (sneaky.status, sneaky.code) == (400, "source_folder_not_allowed")
    assert error_of({"error": "InvalidName", "message": "bad"}).code == "invalid_value"
    assert KnowledgeAPI._unwrap({"ok": 1}) == 1


def api(settings: KnowledgeSettings | None = None, retriever: Any = None) -> KnowledgeAPI:
    return KnowledgeAPI(FakeEmbedding(), retriever, settings or KnowledgeSettings())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sent", "safe"),
    [
        ("../../x.txt", "x.txt"),
        ("/etc/passwd.txt", "passwd.txt"),
        ("C:\\a\\b.md", "b.md"),
        (".env.txt", "env.txt"),
    ],
)
def test_check_files_names_uploads_safely(sent: str, safe: str) -> None:
    assert api().check_files([(sent, b"x")]) == [(safe, b"x")]


def test_check_files_keeps_folders_only_when_asked() -> None:
    assert api().check_files([("sub/../b.md", b"x")], keep_paths=True) == [("sub/b.md", b"x")]
    assert api().check_files([("sub/b.md", b"x")]) == [("b.md", b"x")]


@pytest.mark.parametrize("sent", ["..", "/", "\x00", "../..", ". /\x01"])
def test_a_name_with_nothing_left_is_a_400(sent: str) -> None:
    with pytest.raises(APIError) as info:
        api().check_files([("ok.txt", b"x"), (sent, b"x")])
    assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_file_name", "files")


def test_a_dotted_name_without_a_type_is_still_unsupported() -> None:
    with pytest.raises(APIError) as info:
        api().check_files([(".txt", b"x")])  # 'txt' once the leading dot goes: no extension
    assert info.value.status == 415


def test_upload_stores_documents_under_safe_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = KnowledgeSettings(fts_tokenizer="simple", source_roots=[tmp_path / "sources"])

    class PrepareTask:  # stands for the Ray task: runs `prepare` in this process
        @staticmethod
        async def remote(name: str, data: bytes, raw: dict[str, Any]) -> Any:
            return prepare(name, data, KnowledgeSettings.model_validate(raw))

    monkeypatch.setattr(ingestion, "_prepare_task", PrepareTask)

    async def scenario() -> None:
        retriever = Retriever.func_or_class.__new__(Retriever.func_or_class)
        await retriever.__init__(FakeEmbedding(), settings.model_dump(mode="json"), str(tmp_path / "kb"))
        try:
            kb = api(settings, RetrieverHandle(retriever))
            assert (await kb.store("create_kb", "docs", "", None))["name"] == "docs"
            results = await kb.upload(
                "docs", [("../../../etc/cron.txt", b"pump note"), ("a\x00/.b\x1b.md", b"valve note")]
            )
            assert [r["document"] for r in results] == ["cron.txt", "b.md"]
            kept = await kb.upload("docs", [("sub/c.txt", b"fan note")], keep_paths=True)
            assert kept[0]["document"] == "sub/c.txt"
            listed = await kb.store("documents", "docs")
            assert sorted(d["document"] for d in listed) == ["b.md", "cron.txt", "sub/c.txt"]
            with pytest.raises(APIError) as info:
                await kb.store("create_kb", "other", "", "/etc")
            assert (info.value.status, info.value.code) == (400, "source_folder_not_allowed")
            assert "/etc" in info.value.message and str(tmp_path) not in info.value.message
        finally:
            retriever._compaction.cancel()

    asyncio.run(scenario())
    assert not (tmp_path / "etc").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["kb"]
