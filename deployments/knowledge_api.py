"""The client of the knowledge deployments, as the gateway, the CLI and the folder-sync actor use it:
Embedding and Retriever handles, ingestion through `ingestion.IngestPipeline`, and OpenAI-format errors
for store failures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any

from ray.serve.handle import DeploymentHandle

from deployments.gateway.protocol import APIError, SearchRequest, check_kb_name
from deployments.ingestion import IngestPipeline, Progress
from knowledge import prompt
from knowledge.config import KnowledgeSettings
from knowledge.ingest import PreparedDocument, document_id, upload_name
from knowledge.loaders import LOADERS, LoadError

# Store errors by class name (as the Retriever sends them back): status, code, param.
_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "KnowledgeBaseNotFound": (404, "knowledge_base_not_found", None),
    "InvalidName": (400, "invalid_value", None),
    "SourceFolderNotAllowed": (400, "source_folder_not_allowed", "source_folder"),
}


class KnowledgeAPI:
    def __init__(
        self, embedding: DeploymentHandle, retriever: DeploymentHandle, settings: KnowledgeSettings
    ) -> None:
        self.embedding = embedding
        self.retriever = retriever
        self.settings = settings

    async def store(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = await self.retriever.call.remote(method, *args, **kwargs)
        return self._unwrap(result)

    @staticmethod
    def _unwrap(result: dict[str, Any]) -> Any:
        if "error" in result:
            status, code, param = _ERRORS.get(result["error"], (400, "invalid_value", None))
            # Only a plain StoreError says it: a refused folder's message may quote anything the caller sent.
            if result["error"] == "StoreError" and "already exists" in result["message"]:
                status, code = 409, "already_exists"
            raise APIError(status, result["message"], param=param, code=code)
        return result["ok"]

    async def version(self, kb: str) -> str:
        """Changes whenever the knowledge base does, and differs for a re-created one of the same name."""
        info = await self.store("get_kb", kb)
        return f"{info['created_at']}:{info['version']}"

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """A query's texts: batched with other queries, ahead of any ingestion."""
        return await self.embedding.embed.remote(texts)

    async def embed_bulk(self, texts: list[str]) -> list[list[float]]:
        """An ingestion's texts: in slices that yield to queries."""
        return await self.embedding.embed_bulk.remote(texts)

    async def search(self, kb: str, request: SearchRequest) -> list[dict[str, Any]]:
        await self.store("get_kb", kb)
        vector = (await self.embed([request.query]))[0] if request.mode != "fulltext" else None
        # The site's threshold applies unless the request sets its own.
        threshold = (
            request.score_threshold if request.score_threshold is not None else self.settings.score_threshold
        )
        result = await self.retriever.search.remote(
            kb, request.query, vector, request.mode, request.top_k, threshold, request.filter
        )
        return self._unwrap(result)

    async def retrieve(self, kb: str, request: SearchRequest) -> tuple[str, list[dict[str, Any]]]:
        """The numbered context for a prompt, and the sources an answer cites."""
        hits = await self.search(kb, request)
        return prompt.context_text(hits), prompt.sources(hits)

    def check_files(
        self, files: list[tuple[str, bytes]], *, keep_paths: bool = False
    ) -> list[tuple[str, bytes]]:
        """The files under safe names (`upload_name`; with `keep_paths`, `document_id`, which keeps the
        folders of a folder-relative name), or an APIError for the whole request: no files, a name with
        nothing usable left, an unsupported type, a file too large."""
        if not files:
            raise APIError(
                400,
                "no files: send them as multipart form field 'files'",
                param="files",
                code="missing_required_parameter",
            )
        named = []
        for raw, data in files:
            try:
                name = document_id(raw) if keep_paths else upload_name(raw)
            except LoadError:
                raise APIError(
                    400,
                    f"file name {raw[:200]!r} has nothing left once folders, leading dots and control "
                    "characters are removed",
                    param="files",
                    code="invalid_file_name",
                ) from None
            suffix = PurePosixPath(name).suffix.lower()
            if suffix not in LOADERS:
                raise APIError(
                    415,
                    f"{name}: unsupported file type {suffix or '(none)'}; supported: "
                    + ", ".join(sorted(LOADERS)),
                    param="files",
                    code="unsupported_file_type",
                )
            if len(data) > self.settings.max_file_bytes:
                raise APIError(
                    413,
                    f"{name}: {len(data)} bytes exceeds the limit of {self.settings.max_file_bytes}",
                    param="files",
                    code="file_too_large",
                )
            named.append((name, data))
        return named

    async def upload(
        self,
        kb: str,
        files: list[tuple[str, bytes]],
        *,
        keep_paths: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Parse, embed and write through the overlapping stages of `IngestPipeline`; each file succeeds
        or fails on its own.

        A client's file names lose their folders, control characters and leading dots (`upload_name`);
        folder sync and `raychat kb ingest` pass `keep_paths` for the folder-relative names they built.
        Names only become document ids: nothing is written to disk under them."""
        check_kb_name(kb)
        await self.store("get_kb", kb)
        files = self.check_files(files, keep_paths=keep_paths)
        sources = [(name, (lambda data=data: data)) for name, data in files]
        pipeline = await self.pipeline(kb, [document_id(name) for name, _ in files], on_progress)
        return await pipeline.run(sources)

    async def pipeline(
        self,
        kb: str,
        doc_ids: list[str],
        on_progress: Callable[[Progress], None] | None = None,
        embed: Callable[[list[str]], Awaitable[list[list[float]]]] | None = None,
    ) -> IngestPipeline:
        """An ingestion run into `kb`, which knows what the knowledge base holds of `doc_ids`. `embed`:
        another embedder (a batch job's own) instead of the Embedding deployment's bulk calls."""
        known = await self.store("content_hashes", kb, doc_ids)

        async def write(docs: list[tuple[PreparedDocument, list[list[float]]]]) -> list[dict[str, Any]]:
            return self._unwrap(await self.retriever.write_documents.remote(kb, docs))

        return IngestPipeline(self.settings, embed or self.embed_bulk, write, known, on_progress)
