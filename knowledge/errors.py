"""Errors of the knowledge store, mapped to HTTP statuses by the gateway."""

from __future__ import annotations


class StoreError(ValueError):
    pass


class KnowledgeBaseNotFound(StoreError):
    pass


class InvalidName(StoreError):
    pass
