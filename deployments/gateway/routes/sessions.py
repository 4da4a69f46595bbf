"""`/v1/sessions`: the caller's conversations; `/v1/sessions/{id}`: one's stored messages, and deleting it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request

from deployments.gateway import services
from deployments.gateway.auth.permissions import identity_of
from deployments.gateway.protocol import APIError, Deleted, Session, check_session_id
from deployments.gateway.routes import ERRORS, T, redis_backed

router = APIRouter()


def _not_found(session_id: str) -> APIError:
    return APIError(
        404, f"session {session_id!r} does not exist", param="session_id", code="session_not_found"
    )


async def _session_call(call: Awaitable[T]) -> T:
    return await redis_backed(call, "session store", "session_store_unavailable")


@router.get("/v1/sessions", responses=ERRORS)
async def list_sessions(request: Request) -> dict[str, Any]:
    """The caller's own conversations, the most recent first (no other identity's are ever listed)."""
    svc = services.of(request)
    owner = identity_of(request.scope.get("state")).hashed
    listed = await _session_call(svc.sessions.listed(owner, svc.config.sessions.list_limit))
    return {"object": "list", "data": listed}


@router.get("/v1/sessions/{session_id}", response_model=Session, responses=ERRORS)
async def get_session(session_id: str, request: Request) -> Session:
    check_session_id(session_id)
    owner = identity_of(request.scope.get("state")).hashed
    messages = await _session_call(services.of(request).sessions.messages(owner, session_id))
    if messages is None:
        raise _not_found(session_id)
    return Session(id=session_id, messages=messages)


@router.delete("/v1/sessions/{session_id}", responses={200: {"model": Deleted}, **ERRORS})
async def delete_session(session_id: str, request: Request) -> dict[str, Any]:
    check_session_id(session_id)
    owner = identity_of(request.scope.get("state")).hashed
    if not await _session_call(services.of(request).sessions.delete(owner, session_id)):
        raise _not_found(session_id)
    return {"id": session_id, "object": "session", "deleted": True}
