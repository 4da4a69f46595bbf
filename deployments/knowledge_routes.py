"""The knowledge-base and embeddings routes of the gateway's FastAPI app.

Plain FastAPI routes (not Gateway methods) that reach the replica's KnowledgeAPI through `app.state`, so
the gateway module stays about generation."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from deployments import validation
from deployments.errors import APIError
from deployments.knowledge_api import KnowledgeAPI
from deployments.relay import read_body

router = APIRouter()


def _kb(request: Request) -> KnowledgeAPI:
    return request.app.state.kb_api


async def _json_body(request: Request) -> dict[str, Any]:
    body = validation.parse_json_object(await read_body(request, request.app.state.max_body_bytes))
    request.state.body = {"user": body.get("user")}
    return body


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    body = await _json_body(request)
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
    kb = _kb(request)
    served = kb.settings.embedding_model_id
    model = body.get("model") or served
    if model != served:
        raise APIError(
            404,
            f"The embedding model '{model}' does not exist. Available: {served}",
            param="model",
            code="model_not_found",
        )
    vectors, tokens = await asyncio.gather(
        kb.embedding.embed.remote(texts), kb.embedding.count_tokens.remote(texts)
    )
    return {
        "object": "list",
        "model": served,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/v1/knowledge_bases")
async def list_knowledge_bases(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await _kb(request).store("list_kbs")}


@router.post("/v1/knowledge_bases", status_code=201)
async def create_knowledge_base(request: Request) -> JSONResponse:
    body = await _json_body(request)
    kb = _kb(request)
    name = kb.check_name(body.get("name"))
    description = body.get("description") or ""
    folder = body.get("source_folder")
    if not isinstance(description, str) or (folder is not None and not isinstance(folder, str)):
        raise APIError(400, "'description' and 'source_folder' must be strings", code="invalid_type")
    created = await kb.store("create_kb", name, description, folder)
    return JSONResponse(created, status_code=201)


@router.delete("/v1/knowledge_bases/{name}")
async def delete_knowledge_base(name: str, request: Request) -> dict[str, Any]:
    kb = _kb(request)
    await kb.store("delete_kb", kb.check_name(name))
    return {"name": name, "deleted": True}


@router.get("/v1/knowledge_bases/{name}/documents")
async def list_documents(name: str, request: Request) -> dict[str, Any]:
    kb = _kb(request)
    return {"object": "list", "data": await kb.store("documents", kb.check_name(name))}


@router.post("/v1/knowledge_bases/{name}/documents")
async def upload_documents(name: str, request: Request) -> dict[str, Any]:
    kb = _kb(request)
    kb.check_name(name)
    limit = max(request.app.state.max_body_bytes, kb.settings.max_file_bytes)
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
    files = [(f.filename or "unnamed", await f.read()) for f in form.getlist("files") if hasattr(f, "read")]
    return {"object": "list", "data": await kb.upload(name, files)}


@router.delete("/v1/knowledge_bases/{name}/documents/{document:path}")
async def delete_document(name: str, document: str, request: Request) -> dict[str, Any]:
    kb = _kb(request)
    if not await kb.store("delete_document", kb.check_name(name), document):
        raise APIError(
            404,
            f"document {document!r} is not in knowledge base {name!r}",
            param="document",
            code="document_not_found",
        )
    return {"document": document, "deleted": True}


@router.post("/v1/knowledge_bases/{name}/search")
async def search(name: str, request: Request) -> dict[str, Any]:
    body = await _json_body(request)
    hits = await _kb(request).search(
        name,
        body.get("query"),
        top_k=body.get("top_k"),
        mode=body.get("mode"),
        score_threshold=body.get("score_threshold"),
        filters=body.get("filter"),
    )
    return {"object": "list", "data": hits}
