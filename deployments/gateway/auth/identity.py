"""The verified caller: what an API key or a JWT says about who asks and what they may do.

Ray-free and FastAPI-free, so the CLI and the tests use the same rules as the gateway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from deployments.config import Limits, Role

ALL_KNOWLEDGE_BASES = "*"
Kind = Literal["key", "jwt", "anonymous"]


def hashed(subject: str) -> str:
    """The SHA-256 of a key id or a JWT subject: what the audit and security logs name."""
    return hashlib.sha256(subject.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    kind: Kind
    subject: str  # a key id, a JWT subject, or "anonymous" when auth is off
    name: str
    role: Role
    knowledge_bases: frozenset[str]  # granted names; ALL_KNOWLEDGE_BASES grants every one
    limits: Limits  # effective: the key's own, else the settings' defaults

    @property
    def hashed(self) -> str:
        return hashed(self.subject)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_read(self, knowledge_base: str) -> bool:
        """Sees the knowledge base: lists it, searches it, chats with it. Otherwise it does not exist."""
        return (
            self.is_admin
            or ALL_KNOWLEDGE_BASES in self.knowledge_bases
            or knowledge_base in self.knowledge_bases
        )

    def may_edit(self, knowledge_base: str) -> bool:
        """Uploads and deletes documents in it."""
        return self.is_admin or (self.role == "editor" and self.may_read(knowledge_base))


def anonymous_admin() -> Identity:
    """The caller when `auth.enabled` is false (a laptop): everything allowed, no quotas."""
    return Identity(
        "anonymous", "anonymous", "anonymous", "admin", frozenset({ALL_KNOWLEDGE_BASES}), Limits()
    )
