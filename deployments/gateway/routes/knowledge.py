"""`/v1/embeddings` and the knowledge-base routes: parse at the edge, check what the caller may do,
then one KnowledgeAPI call. A knowledge base the caller is not granted does not exist for it (404);
one it sees but may not change answers 403. Admin actions go to the security log."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from deployments.gateway import protocol, services
from deployments.gateway.auth.identity import Identity
from deployments.gateway.auth.permissions import identity_of, require_admin, require_edit, require_read
from deployments.gateway.errors import record_security_event
from deployments.gateway.protocol import (
    APIError,
    Deleted,
    EmbeddingRequest,
    EmbeddingResponse,
    IngestionJob,
    KnowledgeBaseCreate,
    KnowledgeBaseInfo,
    KnowledgeBaseList,
    SearchRequest,
    SearchResults,
    UploadResults,
)
from deployments.gateway.routes import ERRORS, json_body, multipart_body
from deployments.gateway.stages.parse import json_body as read_json

router = APIRouter()


async def _body(request: Request) -> dict[str, Any]:
    return await read_json(request, services.of(request).config.gateway.max_body_bytes)


def _caller(request: Request) -> Identity:
    return identity_of(request.scope.get("state"))


@router.post(
    "/v1/embeddings",
    openapi_extra=json_body(EmbeddingRequest),
    responses={200: {"model": EmbeddingResponse}, **ERRORS},
)
async def embeddings(request: Request) -> dict[str, Any]:
    svc = services.of(request)
    kb = svc.knowledge
    parsed = protocol.embedding_request(await _body(request), kb.settings.embedding_model_id)
    texts = parsed.texts()
    vectors, tokens = await asyncio.gather(
        kb.embedding.embed.remote(texts), kb.embedding.count_tokens.remote(texts)
    )
    identity = _caller(request)
    if identity.kind != "anonymous":
        await svc.access.quotas.charge(identity, int(tokens))
    return {
        "object": "list",
        "model": parsed.model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/v1/knowledge_bases", responses={200: {"model": KnowledgeBaseList}})
async def list_knowledge_bases(request: Request) -> dict[str, Any]:
    identity = _caller(request)
    kbs = await services.of(request).knowledge.store("list_kbs")
    return {"object": "list", "data": [kb for kb in kbs if identity.may_read(kb["name"])]}


@router.post(
    "/v1/knowledge_bases",
    status_code=201,
    openapi_extra=json_body(KnowledgeBaseCreate),
    responses={201: {"model": KnowledgeBaseInfo}, 409: ERRORS[400], **ERRORS},
)
async def create_knowledge_base(request: Request) -> JSONResponse:
    identity = _caller(request)
    require_admin(identity, "create knowledge bases")
    parsed = protocol.knowledge_base_create(await _body(request))
    kb = services.of(request).knowledge
    try:
        created = await kb.store("create_kb", parsed.name, parsed.description, parsed.source_folder)
    except APIError as exc:
        record_security_event(request, "kb.create", parsed.name, f"refused_{exc.code}")
        raise
    record_security_event(request, "kb.create", parsed.name, "ok")
    if parsed.source_folder is not None:
        record_security_event(request, "kb.source_folder", parsed.name, "ok")
    return JSONResponse(created, status_code=201)


@router.delete("/v1/knowledge_bases/{name}", responses={200: {"model": Deleted}, **ERRORS})
async def delete_knowledge_base(name: str, request: Request) -> dict[str, Any]:
    identity = _caller(request)
    protocol.check_kb_name(name)
    require_read(identity, name)
    require_admin(identity, "delete knowledge bases")
    await services.of(request).knowledge.store("delete_kb", name)
    record_security_event(request, "kb.delete", name, "ok")
    return {"name": name, "deleted": True}


@router.get("/v1/knowledge_bases/{name}/documents", responses=ERRORS)
async def list_documents(name: str, request: Request) -> dict[str, Any]:
    require_read(_caller(request), protocol.check_kb_name(name))
    kb = services.of(request).knowledge
    return {"object": "list", "data": await kb.store("documents", protocol.check_kb_name(name))}


@router.post(
    "/v1/knowledge_bases/{name}/documents",
    responses={200: {"model": UploadResults}, 202: {"model": IngestionJob}, 415: ERRORS[400], **ERRORS},
    openapi_extra=multipart_body(
        ["files"], {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}
    ),
)
async def upload_documents(name: str, request: Request, wait: bool = True) -> Any:
    """Ingests the files and answers with every file's outcome; with `wait=false`, answers 202 at once
    with a job to follow (`GET /v1/knowledge_bases/{name}/jobs/{id}`): a large upload holds no request
    open and no client waits on it."""
    svc = services.of(request)
    kb = svc.knowledge
    protocol.check_kb_name(name)
    require_edit(_caller(request), name)
    limit = svc.config.gateway.max_upload_bytes
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
    if not wait:
        job = await svc.jobs.start(name, files, _caller(request))
        location = f"/v1/knowledge_bases/{name}/jobs/{job.id}"
        return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": location})
    return {"object": "list", "data": await kb.upload(name, files)}


@router.get("/v1/knowledge_bases/{name}/jobs/{job_id}", responses={200: {"model": IngestionJob}, **ERRORS})
async def get_ingestion_job(name: str, job_id: str, request: Request) -> IngestionJob:
    """An upload job's state, files done and failed, chunks; every file's outcome once it has finished.
    Only its starter (or an admin) sees it."""
    identity = _caller(request)
    require_read(identity, protocol.check_kb_name(name))
    return await services.of(request).jobs.get(name, job_id, identity)


@router.delete(
    "/v1/knowledge_bases/{name}/documents/{document:path}", responses={200: {"model": Deleted}, **ERRORS}
)
async def delete_document(name: str, document: str, request: Request) -> dict[str, Any]:
    kb = services.of(request).knowledge
    protocol.check_kb_name(name)
    require_edit(_caller(request), name)
    if not await kb.store("delete_document", name, document):
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
    require_read(_caller(request), protocol.check_kb_name(name))
    parsed = protocol.search_request(await _body(request), kb.settings.default_top_k)
    return {"object": "list", "data": await kb.search(name, parsed)}
