"""API keys as records in Redis: only a keyed hash (HMAC-SHA256 with the server's pepper) of the secret.

A key reads `rc-<id>.<secret>`: the id finds the record in one GET, and the secret is compared with
`hmac.compare_digest`, so neither a wrong secret nor an unknown id answers faster than a right one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.config import Limits, Role
from deployments.gateway.auth.identity import Identity
from deployments.gateway.redis_state import RedisState

KEY_PATTERN = re.compile(r"rc-([0-9a-f]{12})\.([A-Za-z0-9_-]{43})")
DAY_S = 86400
LIMIT_FIELDS = ("rpm", "tpm", "daily_tokens")


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str = Field(min_length=1, max_length=200)
    role: Role
    knowledge_bases: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    created: float
    expires: float | None = None
    revoked: float | None = None
    secret_hash: str = Field(repr=False)

    def active(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)

    def public(self) -> dict[str, Any]:
        """What an admin sees: everything but the hash."""
        return self.model_dump(mode="json", exclude={"secret_hash"})

    def identity(self, default_limits: Limits) -> Identity:
        return Identity(
            kind="key",
            subject=self.id,
            name=self.name,
            role=self.role,
            knowledge_bases=frozenset(self.knowledge_bases),
            limits=self.limits.merged_over(default_limits),
        )


def split(key: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = KEY_PATTERN.fullmatch(key)
    return (match.group(1), match.group(2)) if match else None


class KeyHasher:
    def __init__(self, pepper: bytes) -> None:
        self._pepper = pepper

    def digest(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()

    def matches(self, record: KeyRecord | None, secret: str) -> bool:
        # An unknown id is compared against a dummy hash: the same work as a wrong secret.
        expected = record.secret_hash if record is not None else "0" * 64
        return hmac.compare_digest(self.digest(secret), expected) and record is not None


class KeyStore:
    def __init__(self, redis: RedisState, pepper: bytes) -> None:
        self.redis = redis
        self.hasher = KeyHasher(pepper)

    def _key(self, key_id: str) -> str:
        return self.redis.key("apikey", key_id)

    @property
    def _index(self) -> str:
        return self.redis.key("apikeys")

    async def get(self, key_id: str) -> KeyRecord | None:
        raw = await self.redis.run(lambda c: c.get(self._key(key_id)))
        return KeyRecord.model_validate_json(raw) if raw else None

    async def _save(self, record: KeyRecord) -> None:
        encoded = record.model_dump_json()

        async def write(client: Any) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(self._key(record.id), encoded)
                pipe.sadd(self._index, record.id)
                await pipe.execute()

        await self.redis.run(write)

    async def create(
        self,
        name: str,
        role: Role,
        knowledge_bases: list[str] | None = None,
        limits: Limits | None = None,
        expires_days: float | None = None,
        *,
        key: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key's record and the key itself (shown once). `key` registers a key made earlier (the
        admin key in data/secrets/ when Redis lost its record)."""
        if key is not None:
            parts = split(key)
            if parts is None:
                raise ValueError("not a raychat key")
            key_id, secret = parts
        else:
            key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = time.time()
        record = KeyRecord(
            id=key_id,
            name=name,
            role=role,
            knowledge_bases=sorted(set(knowledge_bases or [])),
            limits=limits or Limits(),
            created=now,
            expires=now + expires_days * DAY_S if expires_days else None,
            secret_hash=self.hasher.digest(secret),
        )
        await self._save(record)
        return record, f"rc-{key_id}.{secret}"

    async def list(self) -> list[KeyRecord]:
        ids = sorted(await self.redis.run(lambda c: c.smembers(self._index)))
        if not ids:
            return []
        raws = await self.redis.run(lambda c: c.mget([self._key(i) for i in ids]))
        return sorted((KeyRecord.model_validate_json(raw) for raw in raws if raw), key=lambda r: r.created)

    async def update(self, key_id: str, **changes: Any) -> KeyRecord | None:
        """Changes name, role, knowledge_bases, expires_days and any of the limits (rpm, tpm,
        daily_tokens; the others kept); None when there is no such key."""
        record = await self.get(key_id)
        if record is None:
            return None
        limits = {f: changes.pop(f) for f in LIMIT_FIELDS if f in changes}
        if limits:
            changes["limits"] = record.limits.model_copy(update=limits)
        if "expires_days" in changes:
            days = changes.pop("expires_days")
            changes["expires"] = time.time() + days * DAY_S if days else None
        if "knowledge_bases" in changes:
            changes["knowledge_bases"] = sorted(set(changes["knowledge_bases"]))
        updated = KeyRecord.model_validate({**record.model_dump(), **changes})
        await self._save(updated)
        return updated

    async def revoke(self, key_id: str) -> KeyRecord | None:
        record = await self.get(key_id)
        if record is None:
            return None
        if record.revoked is None:
            record = record.model_copy(update={"revoked": time.time()})
            await self._save(record)
        return record
