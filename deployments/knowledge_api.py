"""Knowledge-base operations as the gateway runs them: Embedding and Retriever handles, Ray tasks for
parsing, and OpenAI-format errors for whatever is wrong with the request."""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import Any

import ray
from ray.serve.handle import DeploymentHandle

from deployments.errors import APIError
from knowledge.config import KnowledgeSettings
from knowledge.ingest import PreparedDocument, content_hash, document_id, prepare
from knowledge.loaders import LOADERS, LoadError
from knowledge.store import check_name

SEARCH_MODES = ("vector", "fulltext", "hybrid")
_STATUS = {"KnowledgeBaseNotFound": 404, "InvalidName": 400}


@ray.remote(num_cpus=0.25)
def _prepare_task(name: str, data: bytes, settings: dict[str, Any]) -> PreparedDocument:
    return prepare(name, data, KnowledgeSettings.model_validate(settings))


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
            status = _STATUS.get(result["error"], 400)
            if "already exists" in result["message"]:
                status = 409
            code = {404: "knowledge_base_not_found", 409: "already_exists"}.get(status, "invalid_value")
            raise APIError(status, result["message"], code=code)
        return result["ok"]

    @staticmethod
    def check_name(name: Any, param: str = "name") -> str:
        try:
            return check_name(name)
        except ValueError as exc:
            raise APIError(400, str(exc), param=param, code="invalid_name") from exc

    async def version(self, kb: str) -> str:
        """Changes whenever the knowledge base does, and differs for a re-created one of the same name."""
        info = await self.store("get_kb", kb)
        return f"{info['created_at']}:{info['version']}"

    def rag_options(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Pops the knowledge-base extension fields; with a knowledge base, `top_k` is the retrieval depth,
        not sampling top-k."""
        if "knowledge_base" not in body:
            return None
        return {
            "knowledge_base": self.check_name(body.pop("knowledge_base"), "knowledge_base"),
            "top_k": body.pop("top_k", None),
            "mode": body.pop("search_mode", None),
        }

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self.embedding.embed.remote(texts)

    async def search(
        self,
        kb: str,
        query: Any,
        *,
        top_k: Any = None,
        mode: Any = None,
        score_threshold: Any = None,
        filters: Any = None,
    ) -> list[dict[str, Any]]:
        self.check_name(kb)
        if not isinstance(query, str) or not query.strip():
            raise APIError(400, "'query' must be a non-empty string", param="query", code="invalid_value")
        top_k = self.settings.default_top_k if top_k is None else top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
            raise APIError(400, "'top_k' must be an integer in [1, 100]", param="top_k", code="invalid_value")
        mode = mode or "hybrid"
        if mode not in SEARCH_MODES:
            raise APIError(
                400, f"'mode' must be one of {', '.join(SEARCH_MODES)}", param="mode", code="invalid_value"
            )
        if filters is not None and not isinstance(filters, dict):
            raise APIError(400, "'filter' must be an object", param="filter", code="invalid_type")
        threshold = self.settings.score_threshold if score_threshold is None else score_threshold
        await self.store("get_kb", kb)
        vector = (await self.embed([query]))[0] if mode != "fulltext" else None
        result = await self.retriever.search.remote(kb, query, vector, mode, top_k, threshold, filters)
        return self._unwrap(result)

    def check_files(self, files: list[tuple[str, bytes]]) -> None:
        if not files:
            raise APIError(
                400,
                "no files: send them as multipart form field 'files'",
                param="files",
                code="missing_required_parameter",
            )
        for name, data in files:
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

    async def upload(self, kb: str, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Parse files in parallel Ray tasks, embed, write; each file succeeds or fails on its own."""
        self.check_name(kb)
        await self.store("get_kb", kb)
        self.check_files(files)
        known = await self.store("content_hashes", kb)
        results: dict[int, dict[str, Any]] = {}
        pending: list[tuple[int, Any]] = []
        for i, (name, data) in enumerate(files):
            try:
                doc = document_id(name)
            except LoadError as exc:
                results[i] = {"document": name, "status": "failed", "error": str(exc)}
                continue
            if known.get(doc) == content_hash(data):
                results[i] = {"document": doc, "status": "unchanged", "chunks": 0}
                continue
            pending.append((i, _prepare_task.remote(name, data, self.settings.model_dump(mode="json"))))
        prepared: list[tuple[int, PreparedDocument]] = []
        for i, ref in pending:
            try:
                prepared.append((i, await ref))
            except Exception as exc:  # the task's LoadError arrives wrapped in a RayTaskError
                cause = getattr(exc, "cause", None) or exc
                results[i] = {"document": files[i][0], "status": "failed", "error": str(cause).strip()}
        if prepared:
            vectors = await asyncio.gather(*(self.embed(doc.texts) for _, doc in prepared))
            written = self._unwrap(
                await self.retriever.write_documents.remote(
                    kb, [(doc, vecs) for (_, doc), vecs in zip(prepared, vectors, strict=True)]
                )
            )
            for (i, _), outcome in zip(prepared, written, strict=True):
                results[i] = outcome
        return [results[i] for i in range(len(files))]

    async def context_for(
        self, kb: str, question: str, *, top_k: Any, mode: Any
    ) -> tuple[str, list[dict[str, Any]]]:
        hits = await self.search(kb, question, top_k=top_k, mode=mode)
        context = "\n\n".join(f"[{n}] ({h['document']}) {h['text']}" for n, h in enumerate(hits, start=1))
        sources = [
            {
                "document": h["document"],
                "chunk": h["chunk"],
                "score": h["score"],
                "text": h["text"],
                "metadata": h["metadata"],
            }
            for h in hits
        ]
        return context, sources

    def rag_messages(self, messages: list[dict[str, Any]], context: str) -> list[dict[str, Any]]:
        """Fill the prompt template into the last user message; earlier turns stay as they are."""
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].get("role") == "user" and isinstance(messages[i].get("content"), str):
                filled = self.settings.prompt_template.format(
                    context=context or "(no matching documents)", question=messages[i]["content"]
                )
                return [*messages[:i], {**messages[i], "content": filled}, *messages[i + 1 :]]
        raise APIError(
            400,
            "a knowledge-base chat needs a user message with text content",
            param="messages",
            code="invalid_value",
        )
