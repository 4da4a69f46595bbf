"""`/v1/admin/keys`: API keys for people and services, admin only. The key itself is shown once, in the
answer to its creation; every change goes to the security log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from deployments.config import Limits
from deployments.gateway import protocol, services
from deployments.gateway.auth.identity import hashed
from deployments.gateway.auth.keys import LIMIT_FIELDS, KeyRecord
from deployments.gateway.auth.permissions import identity_of, require_admin
from deployments.gateway.errors import record_security_event
from deployments.gateway.protocol import APIError, KeyCreate, KeyUpdate
from deployments.gateway.routes import ERRORS, T, json_body, redis_backed
from deployments.gateway.stages.parse import json_body as read_json

router = APIRouter()


def _admin(request: Request, action: str) -> None:
    # A refusal is written to the security log by the error handler.
    require_admin(identity_of(request.scope.get("state")), action)


async def _existing(key_id: str, call: Callable[[str], Awaitable[KeyRecord | None]]) -> KeyRecord:
    """`call(key_id)`'s record, or 404 for an id that names no key (or is no id at all)."""
    record = await _keys_call(call(key_id)) if key_id.isalnum() else None
    if record is None:
        raise APIError(404, f"API key {key_id!r} does not exist", param="id", code="key_not_found")
    return record


async def _keys_call(call: Awaitable[T]) -> T:
    return await redis_backed(call, "key store", "auth_unavailable")


async def _with_usage(request: Request, records: list[KeyRecord]) -> list[dict[str, Any]]:
    usage = await _keys_call(services.of(request).access.quotas.usage_today([hashed(r.id) for r in records]))
    return [{"object": "api_key", **r.public(), "usage_today": vars(usage[hashed(r.id)])} for r in records]


@router.get("/v1/admin/keys", responses=ERRORS)
async def list_keys(request: Request) -> dict[str, Any]:
    _admin(request, "list keys")
    records = await _keys_call(services.of(request).keys.list())
    return {"object": "list", "data": await _with_usage(request, records)}


@router.post("/v1/admin/keys", status_code=201, openapi_extra=json_body(KeyCreate), responses=ERRORS)
async def create_key(request: Request) -> JSONResponse:
    _admin(request, "create keys")
    svc = services.of(request)
    parsed = protocol.key_create(await read_json(request, svc.config.gateway.max_body_bytes))
    limits = Limits(**{f: getattr(parsed, f) for f in LIMIT_FIELDS})
    record, key = await _keys_call(
        svc.keys.create(parsed.name, parsed.role, parsed.knowledge_bases, limits, parsed.expires_days)
    )
    record_security_event(request, "key.create", record.id, "ok")
    return JSONResponse({"object": "api_key", **record.public(), "key": key}, status_code=201)


@router.get("/v1/admin/keys/{key_id}", responses=ERRORS)
async def get_key(key_id: str, request: Request) -> dict[str, Any]:
    _admin(request, "read keys")
    record = await _existing(key_id, services.of(request).keys.get)
    return (await _with_usage(request, [record]))[0]


@router.patch("/v1/admin/keys/{key_id}", openapi_extra=json_body(KeyUpdate), responses=ERRORS)
async def update_key(key_id: str, request: Request) -> dict[str, Any]:
    _admin(request, "change keys")
    svc = services.of(request)
    parsed = protocol.key_update(await read_json(request, svc.config.gateway.max_body_bytes))
    changes = {f: getattr(parsed, f) for f in parsed.model_fields_set}
    record = await _existing(key_id, lambda i: svc.keys.update(i, **changes))
    record_security_event(request, "key.update", key_id, "ok")
    return {"object": "api_key", **record.public()}


@router.delete("/v1/admin/keys/{key_id}", responses=ERRORS)
async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
    _admin(request, "revoke keys")
    await _existing(key_id, services.of(request).keys.revoke)
    record_security_event(request, "key.revoke", key_id, "ok")
    return {"object": "api_key", "id": key_id, "revoked": True}
