"""Key administration bodies (`/v1/admin/keys`): what an admin may set on an API key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.config import Role
from deployments.gateway.protocol.errors import bad_request
from deployments.gateway.protocol.values import check_kb_name, from_validation_error

ALL = "*"


class KeyFields(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    knowledge_bases: list[str] | None = Field(None, description="granted knowledge bases; ['*'] grants all")
    rpm: int | None = Field(None, ge=1, le=10**9, description="requests per minute")
    tpm: int | None = Field(None, ge=1, le=10**12, description="tokens per minute")
    daily_tokens: int | None = Field(None, ge=1, le=10**13, description="tokens per UTC day")
    expires_days: float | None = Field(None, gt=0, le=36500, description="the key stops working after")


class KeyCreate(KeyFields):
    name: str = Field(min_length=1, max_length=200)
    role: Role


class KeyUpdate(KeyFields):
    name: str | None = Field(None, min_length=1, max_length=200)
    role: Role | None = None


def _check_grants(grants: list[str] | None) -> None:
    for i, name in enumerate(grants or []):
        if name != ALL:
            check_kb_name(name, f"knowledge_bases[{i}]")


def key_create(body: Mapping[str, Any]) -> KeyCreate:
    try:
        parsed = KeyCreate.model_validate(dict(body))
    except ValidationError as exc:
        raise from_validation_error(exc) from exc
    _check_grants(parsed.knowledge_bases)
    return parsed


def key_update(body: Mapping[str, Any]) -> KeyUpdate:
    try:
        parsed = KeyUpdate.model_validate(dict(body))
    except ValidationError as exc:
        raise from_validation_error(exc) from exc
    if not parsed.model_fields_set:
        raise bad_request("nothing to change", None, "empty_update")
    _check_grants(parsed.knowledge_bases)
    return parsed
