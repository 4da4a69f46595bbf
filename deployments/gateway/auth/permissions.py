"""What a verified identity may do, asked by routes and stages. A knowledge base the identity is not
granted does not exist for it: the same 404 as a missing one. A resource it sees but may not change: 403."""

from __future__ import annotations

from typing import Any

from deployments.gateway.auth.identity import Identity
from deployments.gateway.protocol import APIError


class AccessDenied(APIError):
    """A refusal of what the identity may not do (403, or 404 for a knowledge base not granted). The
    error handler writes it to the security log; the client sees the plain error."""


def identity_of(scope_state: Any) -> Identity:
    """The identity the Authenticate middleware put on the request; none means refuse (fail closed)."""
    identity = scope_state.get("identity") if isinstance(scope_state, dict) else None
    if not isinstance(identity, Identity):
        raise APIError(401, INVALID_KEY_MESSAGE, code="invalid_api_key")
    return identity


INVALID_KEY_MESSAGE = (
    "Invalid or missing API key. Send 'Authorization: Bearer <key>' with a valid raychat key or token."
)


def denied(action: str) -> AccessDenied:
    return AccessDenied(403, f"this key may not {action}", code="permission_denied")


def knowledge_base_missing(name: str) -> AccessDenied:
    """The same body as a knowledge base that does not exist."""
    return AccessDenied(404, f"knowledge base {name!r} does not exist", code="knowledge_base_not_found")


def require_admin(identity: Identity, action: str) -> None:
    if not identity.is_admin:
        raise denied(action)


def require_read(identity: Identity, knowledge_base: str) -> None:
    if not identity.may_read(knowledge_base):
        raise knowledge_base_missing(knowledge_base)


def require_edit(identity: Identity, knowledge_base: str) -> None:
    require_read(identity, knowledge_base)
    if not identity.may_edit(knowledge_base):
        raise denied(f"change knowledge base {knowledge_base!r}")
