"""What one gateway replica holds, and how routes and middleware reach it.

Kept in this module, not on `app.state`: Serve freezes the ingress app with cloudpickle when the
deployment is declared, so the app a replica serves is a copy, not the module's `app` object. A module is
pickled by reference, so this one's holder is the same for the replica's constructor and its routes
(one replica per process).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from ray.serve.handle import DeploymentHandle

from deployments.config import AppConfig
from deployments.gateway.audit import AuditLog
from deployments.gateway.auth.keys import KeyStore
from deployments.gateway.auth.middleware import Access
from deployments.gateway.batch_files import BatchFiles
from deployments.gateway.batches import Batches
from deployments.gateway.ingestion_jobs import IngestionJobs
from deployments.gateway.pipeline import Pipeline
from deployments.gateway.protocol import APIError
from deployments.gateway.sessions import SessionStore
from deployments.knowledge_api import KnowledgeAPI
from deployments.metrics import MetricsRecorder


@dataclass(frozen=True)
class Services:
    config: AppConfig
    llm: DeploymentHandle
    knowledge: KnowledgeAPI
    sessions: SessionStore
    metrics: MetricsRecorder
    pipeline: Pipeline
    audit: AuditLog
    access: Access
    keys: KeyStore
    jobs: IngestionJobs
    files: BatchFiles
    batches: Batches
    created: int  # the model card's `created`

    @property
    def model_id(self) -> str:
        return self.config.llm.model_id


_replica: Services | None = None


def install(services: Services) -> None:
    global _replica
    _replica = services


def current() -> Services | None:
    return _replica


def of(_: Request) -> Services:
    if _replica is None:
        raise APIError(
            503, "the gateway is starting; retry shortly", code="not_ready", headers={"Retry-After": "1"}
        )
    return _replica
