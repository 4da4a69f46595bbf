"""Errors of the knowledge store, mapped to HTTP statuses by the gateway."""

from __future__ import annotations


class StoreError(ValueError):
    pass


class KnowledgeBaseNotFound(StoreError):
    pass


class InvalidName(StoreError):
    pass


class SourceFolderNotAllowed(StoreError):
    """A source folder, or a file in one, whose real path is not inside `knowledge.source_roots`."""
