"""`/v1/files`: the Batch API's files, OpenAI's shape. Upload (multipart `file` and `purpose: batch`), a
file's record, its bytes, deleting it. A file is its owner's alone: another identity gets 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from deployments.gateway import services
from deployments.gateway.auth.permissions import identity_of
from deployments.gateway.protocol.batches import FileDeleted, FileObject
from deployments.gateway.routes import ERRORS, multipart_body

router = APIRouter()
_UPLOAD_BODY = multipart_body(
    ["file", "purpose"],
    {"file": {"type": "string", "format": "binary"}, "purpose": {"type": "string", "enum": ["batch"]}},
)


def _owner(request: Request) -> str:
    return identity_of(request.scope.get("state")).hashed


@router.post("/v1/files", openapi_extra=_UPLOAD_BODY, responses={200: {"model": FileObject}, **ERRORS})
async def upload_file(request: Request) -> dict[str, Any]:
    """A JSONL file of batch requests, at most `gateway.batch_max_file_bytes` and `gateway.batch_max_rows`."""
    file = await services.of(request).files.upload(request, _owner(request))
    return file.model_dump(mode="json")


@router.get("/v1/files/{file_id}", responses={200: {"model": FileObject}, **ERRORS})
async def get_file(file_id: str, request: Request) -> dict[str, Any]:
    file = await services.of(request).files.get(file_id, _owner(request))
    return file.model_dump(mode="json")


@router.get(
    "/v1/files/{file_id}/content",
    responses={200: {"content": {"application/jsonl": {}}, "description": "the file's bytes"}, **ERRORS},
)
async def get_file_content(file_id: str, request: Request) -> FileResponse:
    path = await services.of(request).files.content(file_id, _owner(request))
    return FileResponse(path, media_type="application/jsonl")


@router.delete("/v1/files/{file_id}", responses={200: {"model": FileDeleted}, **ERRORS})
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    deleted = await services.of(request).files.delete(file_id, _owner(request))
    return deleted.model_dump(mode="json")
