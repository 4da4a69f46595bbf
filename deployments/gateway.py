"""The Gateway deployment: FastAPI ingress in front of the LLM deployment.

Each route parses and checks the request itself (so every bad input gets OpenAI's error format), then
calls the LLM deployment through its DeploymentHandle and relays the answer: one JSON body, or the engine's
SSE lines as they come. Later layers (knowledge bases, sessions, cache, auth, audit) hang off this class.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments import request_audit, validation
from deployments.audit import AuditLog
from deployments.config import AppConfig
from deployments.errors import APIError, from_engine_error, install_error_handlers
from deployments.knowledge_api import KnowledgeAPI
from deployments.relay import is_engine_error, join_batch, read_body, with_sources

log = logging.getLogger("raychat.gateway")
log.addFilter(request_audit.TraceIdFilter())

app = FastAPI(title="raychat", docs_url=None, redoc_url=None)
install_error_handlers(app)


app.add_middleware(request_audit.TraceAndAudit, audit_log=lambda: getattr(app.state, "audit_log", None))


@serve.deployment(name="Gateway")
@serve.ingress(app)
class Gateway:
    def __init__(
        self,
        llm: DeploymentHandle,
        embedding: DeploymentHandle,
        retriever: DeploymentHandle,
        config: dict[str, Any],
    ) -> None:
        self._config = AppConfig.model_validate(config)
        self._llm = llm
        self._embedding = embedding
        self._kb = KnowledgeAPI(embedding, retriever, self._config.knowledge)
        self._model_id = self._config.llm.model_id
        self._created = int(time.time())
        gw = self._config.gateway
        self._audit = AuditLog(
            self._config.audit_path, max_bytes=gw.audit_max_bytes, backups=gw.audit_backups
        )
        app.state.audit_log = self._audit

    def audit(self, request: Request, *, model: str | None, tokens: int, prompt: str, answer: str) -> None:
        """One audit line for this request; the texts only decide `sensitive` and are not written."""
        request.state.audited = True
        self._audit.record(
            trace_id=request.state.trace_id,
            user=request_audit.user_of(request.headers, getattr(request.state, "body", None)),
            endpoint=request.url.path,
            model=model,
            tokens=tokens,
            sensitive=request_audit.sensitive(prompt, answer),
        )

    async def _json_body(self, request: Request) -> dict[str, Any]:
        body = validation.parse_json_object(await read_body(request, self._config.gateway.max_body_bytes))
        request.state.body = {"user": body.get("user")}
        return body

    # --- health -----------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            await asyncio.wait_for(
                self._llm.check_health.remote(), timeout=self._config.gateway.readiness_timeout_s
            )
        except Exception as exc:  # any failure to answer means not ready
            message = f"LLM deployment not ready: {type(exc).__name__}"
            return APIError(503, message, code="not_ready").response()
        return JSONResponse({"status": "ready", "model": self._model_id})

    # --- models -----------------------------------------------------------------------------------
    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self._model_id,
            "object": "model",
            "created": self._created,
            "owned_by": "raychat",
            "max_model_len": self._config.llm.max_model_len,
        }

    @app.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self._model_card()]}

    @app.get("/v1/models/{model:path}")
    async def get_model(self, model: str) -> dict[str, Any]:
        if model != self._model_id:
            raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
        return self._model_card()

    # --- generation -------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        body = await self._json_body(request)
        sources = None
        if "knowledge_base" in body:
            # Extension fields; with a knowledge base, `top_k` is the retrieval depth, not sampling top-k.
            kb = self._kb.check_name(body.pop("knowledge_base"), "knowledge_base")
            top_k, mode = body.pop("top_k", None), body.pop("search_mode", None)
            validation.check_messages(body)
            question = next(
                (
                    m.get("content")
                    for m in reversed(body["messages"])
                    if m.get("role") == "user" and isinstance(m.get("content"), str)
                ),
                "",
            )
            context, sources = await self._kb.context_for(kb, question, top_k=top_k, mode=mode)
            body["messages"] = self._kb.rag_messages(body["messages"], context)
        chat = validation.chat_request(body, self._model_id)
        return await self._generate(request, "chat", chat, bool(chat.stream), sources)

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        completion = validation.completion_request(await self._json_body(request), self._model_id)
        return await self._generate(request, "completions", completion, bool(completion.stream))

    async def _generate(
        self,
        http: Request,
        method: str,
        request: Any,
        stream: bool,
        sources: list[dict[str, Any]] | None = None,
    ) -> Response:
        responses = getattr(self._llm.options(stream=True), method).remote(request)
        try:
            first = await responses.__anext__()
        except StopAsyncIteration:
            raise APIError(500, "the engine returned no response", code="empty_response") from None
        except BackPressureError as exc:
            raise APIError(
                503,
                "the LLM deployment is at capacity; retry shortly",
                code="overloaded",
                headers={"Retry-After": "1"},
            ) from exc
        if not stream:
            if is_engine_error(first):
                raise from_engine_error(first)
            answer = first.model_dump(mode="json", exclude_none=True)
            if sources is not None:
                answer["sources"] = sources
            self.audit(
                http,
                model=self._model_id,
                tokens=int((answer.get("usage") or {}).get("total_tokens", 0)),
                prompt=request_audit.prompt_text(request),
                answer=request_audit.answer_text(answer),
            )
            return JSONResponse(answer)
        if isinstance(first, list) and first and is_engine_error(first[0]):
            raise from_engine_error(first[0])
        if sources is not None:
            first = with_sources(first, sources)
        http.state.audited = True  # written when the stream ends
        return StreamingResponse(
            self._relay(http, request, first, responses),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _relay(
        self, http: Request, request: Any, first: Any, rest: AsyncIterator[Any]
    ) -> AsyncIterator[str]:
        tap = request_audit.StreamTap()
        try:
            yield tap.add(join_batch(first))
            async for batch in rest:
                yield tap.add(join_batch(batch))
        except Exception as exc:  # the stream is already open: report in-band, then close it
            log.exception("stream failed")
            body = APIError(500, f"generation failed: {type(exc).__name__}", code="stream_error").body()
            yield f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n"
        finally:
            self.audit(
                http,
                model=self._model_id,
                tokens=tap.tokens(),
                prompt=request_audit.prompt_text(request),
                answer=tap.answer(),
            )

    # --- embeddings and knowledge bases -------------------------------------------------------------
    @app.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> dict[str, Any]:
        body = await self._json_body(request)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise APIError(
                400,
                "'input' must be a non-empty string or array of non-empty strings",
                param="input",
                code="invalid_value",
            )
        served = self._config.knowledge.embedding_model_id
        model = body.get("model") or served
        if model != served:
            raise APIError(
                404,
                f"The embedding model '{model}' does not exist. Available: {served}",
                param="model",
                code="model_not_found",
            )
        vectors, tokens = await asyncio.gather(
            self._embedding.embed.remote(texts), self._embedding.count_tokens.remote(texts)
        )
        return {
            "object": "list",
            "model": served,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/v1/knowledge_bases")
    async def list_knowledge_bases(self) -> dict[str, Any]:
        return {"object": "list", "data": await self._kb.store("list_kbs")}

    @app.post("/v1/knowledge_bases", status_code=201)
    async def create_knowledge_base(self, request: Request) -> JSONResponse:
        body = await self._json_body(request)
        name = self._kb.check_name(body.get("name"))
        description = body.get("description") or ""
        folder = body.get("source_folder")
        if not isinstance(description, str) or (folder is not None and not isinstance(folder, str)):
            raise APIError(400, "'description' and 'source_folder' must be strings", code="invalid_type")
        created = await self._kb.store("create_kb", name, description, folder)
        return JSONResponse(created, status_code=201)

    @app.delete("/v1/knowledge_bases/{name}")
    async def delete_knowledge_base(self, name: str) -> dict[str, Any]:
        await self._kb.store("delete_kb", self._kb.check_name(name))
        return {"name": name, "deleted": True}

    @app.get("/v1/knowledge_bases/{name}/documents")
    async def list_documents(self, name: str) -> dict[str, Any]:
        return {"object": "list", "data": await self._kb.store("documents", self._kb.check_name(name))}

    @app.post("/v1/knowledge_bases/{name}/documents")
    async def upload_documents(self, name: str, request: Request) -> dict[str, Any]:
        self._kb.check_name(name)
        limit = max(self._config.gateway.max_body_bytes, self._config.knowledge.max_file_bytes)
        if int(request.headers.get("content-length") or 0) > limit:
            raise APIError(413, f"upload exceeds the limit of {limit} bytes", code="request_too_large")
        try:
            form = await request.form(max_files=1000)
        except Exception as exc:  # not multipart, or a broken body
            raise APIError(
                400,
                f"expected multipart/form-data with field 'files': {exc}",
                param="files",
                code="invalid_multipart",
            ) from exc
        files = [
            (f.filename or "unnamed", await f.read()) for f in form.getlist("files") if hasattr(f, "read")
        ]
        return {"object": "list", "data": await self._kb.upload(name, files)}

    @app.delete("/v1/knowledge_bases/{name}/documents/{document:path}")
    async def delete_document(self, name: str, document: str) -> dict[str, Any]:
        if not await self._kb.store("delete_document", self._kb.check_name(name), document):
            raise APIError(
                404,
                f"document {document!r} is not in knowledge base {name!r}",
                param="document",
                code="document_not_found",
            )
        return {"document": document, "deleted": True}

    @app.post("/v1/knowledge_bases/{name}/search")
    async def search(self, name: str, request: Request) -> dict[str, Any]:
        body = await self._json_body(request)
        hits = await self._kb.search(
            name,
            body.get("query"),
            top_k=body.get("top_k"),
            mode=body.get("mode"),
            score_threshold=body.get("score_threshold"),
            filters=body.get("filter"),
        )
        return {"object": "list", "data": hits}
