"""`GET /v1/me`: who the credential is and what it may do, so a client (the console) shows only that."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from deployments.gateway.auth.identity import ALL_KNOWLEDGE_BASES
from deployments.gateway.auth.permissions import identity_of
from deployments.gateway.routes import ERRORS

router = APIRouter()


@router.get("/v1/me", responses=ERRORS)
async def me(request: Request) -> dict[str, Any]:
    identity = identity_of(request.scope.get("state"))
    grants = sorted(identity.knowledge_bases)
    return {
        "object": "identity",
        "kind": identity.kind,
        "name": identity.name,
        "role": identity.role,
        "knowledge_bases": [ALL_KNOWLEDGE_BASES] if identity.is_admin else grants,
        "may_edit": identity.role in ("admin", "editor"),
        "limits": identity.limits.model_dump(mode="json"),
    }
