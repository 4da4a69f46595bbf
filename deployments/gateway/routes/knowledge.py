"""`/v1/embeddings` and the knowledge-base routes: parse at the edge, then one KnowledgeAPI call."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from deployments.gateway import protocol, services
from deployments.gateway.protocol import (
    APIError,
    Deleted,
    EmbeddingRequest,
    EmbeddingResponse,
    KnowledgeBaseCreate,
    KnowledgeBaseInfo,
    KnowledgeBaseList,
    SearchRequest,
    SearchResults,
    UploadResults,
)
from deployments.gateway.routes import ERRORS, json_body
from deployments.gateway.stages.parse import json_body as read_json

router = APIRouter()


async def _body(request: Request) -> dict[str, Any]:
    return await read_json(request, services.of(request).config.gateway.max_body_bytes)


@router.post(
    "/v1/embeddings",
    openapi_extra=json_body(EmbeddingRequest),
    responses={200: {"model": EmbeddingResponse}, **ERRORS},
)
async def embeddings(request: Request) -> dict[str, Any]:
    kb = services.of(request).knowledge
    parsed = protocol.embedding_request(await _body(request), kb.settings.embedding_model_id)
    texts = parsed.texts()
    vectors, tokens = await asyncio.gather(
        kb.embedding.embed.remote(texts), kb.embedding.count_tokens.remote(texts)
    )
    return {
        "object": "list",
        "model": parsed.model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/v1/knowledge_bases", responses={200: {"model": KnowledgeBaseList}})
async def list_knowledge_bases(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await services.of(request).knowledge.store("list_kbs")}


@router.post(
    "/v1/knowledge_bases",
    status_code=201,
    openapi_extra=json_body(KnowledgeBaseCreate),
    responses={201: {"model": KnowledgeBaseInfo}, 409: ERRORS[400], **ERRORS},
)
async def create_knowledge_base(request: Request) -> JSONResponse:
    parsed = protocol.knowledge_base_create(await _body(request))
    kb = services.of(request).knowledge
    created = await kb.store("create_kb", parsed.name, parsed.description, parsed.source_folder)
    return JSONResponse(created, status_code=201)


@router.delete("/v1/knowledge_bases/{name}", responses={200: {"model": Deleted}, **ERRORS})
async def delete_knowledge_base(name: str, request: Request) -> dict[str, Any]:
    await services.of(request).knowledge.store("delete_kb", protocol.check_kb_name(name))
    return {"name": name, "deleted": True}


@router.get("/v1/knowledge_bases/{name}/documents", responses=ERRORS)
async def list_documents(name: str, request: Request) -> dict[str, Any]:
    kb = services.of(request).knowledge
    return {"object": "list", "data": await kb.store("documents", protocol.check_kb_name(name))}


@router.post(
    "/v1/knowledge_bases/{name}/documents",
    responses={200: {"model": UploadResults}, 415: ERRORS[400], **ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["files"],
                        "properties": {
                            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                        },
                    }
                }
            },
        }
    },
)
async def upload_documents(name: str, request: Request) -> dict[str, Any]:
    svc = services.of(request)
    kb = svc.knowledge
    protocol.check_kb_name(name)
    limit = max(svc.config.gateway.max_body_bytes, kb.settings.max_file_bytes)
    declared = request.headers.get("content-length") or "0"
    if declared.isdigit() and int(declared) > limit:
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
    files = [(f.filename or "unnamed", await f.read()) for f in form.getlist("files") if hasattr(f, "read")]
    return {"object": "list", "data": await kb.upload(name, files)}


@router.delete(
    "/v1/knowledge_bases/{name}/documents/{document:path}", responses={200: {"model": Deleted}, **ERRORS}
)
async def delete_document(name: str, document: str, request: Request) -> dict[str, Any]:
    kb = services.of(request).knowledge
    if not await kb.store("delete_document", protocol.check_kb_name(name), document):
        raise APIError(
            404,
            f"document {document!r} is not in knowledge base {name!r}",
            param="document",
            code="document_not_found",
        )
    return {"document": document, "deleted": True}


@router.post(
    "/v1/knowledge_bases/{name}/search",
    openapi_extra=json_body(SearchRequest),
    responses={200: {"model": SearchResults}, **ERRORS},
)
async def search(name: str, request: Request) -> dict[str, Any]:
    kb = services.of(request).knowledge
    protocol.check_kb_name(name)
    parsed = protocol.search_request(await _body(request), kb.settings.default_top_k)
    return {"object": "list", "data": await kb.search(name, parsed)}
