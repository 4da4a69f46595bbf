"""`/v1/batches`: OpenAI's Batch API. Create (a `batch` file and an endpoint), follow, list the caller's
own, cancel. The rows run on the replica that took the create, through the same pipeline as online
requests (`batch_runner.py`); another identity's batch does not exist for the caller (404)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from deployments.gateway import services
from deployments.gateway.auth.permissions import identity_of
from deployments.gateway.protocol.batches import Batch, BatchCreate, BatchList, batch_create, list_limit
from deployments.gateway.routes import ERRORS, json_body
from deployments.gateway.stages.parse import json_body as read_json

router = APIRouter()
_BATCH = {200: {"model": Batch}, **ERRORS}


@router.post("/v1/batches", openapi_extra=json_body(BatchCreate), responses=_BATCH)
async def create_batch(request: Request) -> dict[str, Any]:
    svc = services.of(request)
    identity = identity_of(request.scope.get("state"))
    parsed = batch_create(await read_json(request, svc.config.gateway.max_body_bytes))
    return (await svc.batches.create(parsed, identity)).model_dump(mode="json")


@router.get("/v1/batches", responses={200: {"model": BatchList}, **ERRORS})
async def list_batches(
    request: Request, limit: str | None = None, after: str | None = None
) -> dict[str, Any]:
    """The caller's batches, newest first, `limit` (1-100, default 20) at a time after the id `after`."""
    identity = identity_of(request.scope.get("state"))
    listed = await services.of(request).batches.list(identity, list_limit(limit), after)
    return listed.model_dump(mode="json")


@router.get("/v1/batches/{batch_id}", responses=_BATCH)
async def get_batch(batch_id: str, request: Request) -> dict[str, Any]:
    identity = identity_of(request.scope.get("state"))
    return (await services.of(request).batches.get(batch_id, identity)).model_dump(mode="json")


@router.post("/v1/batches/{batch_id}/cancel", responses={**_BATCH, 409: ERRORS[400]})
async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
    """No new row starts; rows in flight finish; the batch ends `cancelled`, what it wrote kept."""
    identity = identity_of(request.scope.get("state"))
    return (await services.of(request).batches.cancel(batch_id, identity)).model_dump(mode="json")
