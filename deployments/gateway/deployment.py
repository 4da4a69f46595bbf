"""The Gateway deployment: the FastAPI ingress, and the composition of one replica's services.

The routes live in `routes/`, the generation path in `pipeline.py` and `stages/`; this module builds
the objects they share (handles, Redis, sessions, cache, metrics, audit) once per replica.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.config import AppConfig, ConsoleSettings
from deployments.gateway import middleware, services
from deployments.gateway.answer_cache import QuestionCache
from deployments.gateway.audit import AuditLog
from deployments.gateway.auth.authenticator import Authenticator
from deployments.gateway.auth.guard import FailureGuard
from deployments.gateway.auth.keys import KeyStore
from deployments.gateway.auth.middleware import Access, Authenticate
from deployments.gateway.auth.quotas import Quotas
from deployments.gateway.auth.secrets import read_pepper
from deployments.gateway.auth.security_log import SecurityLog
from deployments.gateway.batch_files import BatchFiles
from deployments.gateway.batch_runner import BatchRunner
from deployments.gateway.batches import Batches, BatchRecords
from deployments.gateway.errors import install_error_handlers
from deployments.gateway.ingestion_jobs import IngestionJobs
from deployments.gateway.pipeline import Pipeline
from deployments.gateway.redis_state import RedisState
from deployments.gateway.routes import (
    BODY_MODELS,
    admin,
    batches,
    console,
    files,
    generation,
    health,
    knowledge,
    me,
    overview,
    sessions,
)
from deployments.gateway.services import Services
from deployments.gateway.sessions import SessionStore, TokenCounter
from deployments.gateway.stages.authorize import Authorize
from deployments.gateway.stages.conversation import Conversation
from deployments.gateway.stages.generation import Generation
from deployments.gateway.stages.identify import Identify
from deployments.gateway.stages.parse import Parse
from deployments.gateway.stages.record import Record
from deployments.gateway.stages.retrieval import Retrieval
from deployments.knowledge_api import KnowledgeAPI
from deployments.metrics import MetricsRecorder

log = logging.getLogger("raychat.gateway")
log.addFilter(middleware.TraceIdFilter())

app = FastAPI(title="raychat", version="1", docs_url=None, redoc_url=None)
install_error_handlers(app)
for module in (health, generation, sessions, knowledge, files, batches, admin, me, overview, console):
    app.include_router(module.router)
# The last added runs first: the route prefix (an upgrade's second colour) is taken off the path, every
# response gets the security headers, every request its trace id, version header and audit line, then a
# path with control characters is refused, then the caller is authenticated and counted against its
# quota, then routing.
app.add_middleware(Authenticate, access=lambda: getattr(services.current(), "access", None))
app.add_middleware(middleware.RefuseControlCharacters)
app.add_middleware(
    middleware.TraceAndAudit,
    audit_log=lambda: getattr(services.current(), "audit", None),
    metrics=lambda: getattr(services.current(), "metrics", None),
    version=lambda: getattr(getattr(services.current(), "config", None), "version", None),
)
app.add_middleware(
    middleware.SecurityHeaders,
    policy=lambda: (
        getattr(
            getattr(services.current(), "config", None), "console", ConsoleSettings()
        ).content_security_policy
    ),
)
app.add_middleware(middleware.StripRoutePrefix)


def openapi() -> dict[str, Any]:
    """FastAPI's document, plus the request-body schemas the routes declare with `json_body`."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        _, defs = models_json_schema(
            [(model, "validation") for model in BODY_MODELS], ref_template="#/components/schemas/{model}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = openapi  # type: ignore[method-assign]


def build_access(config: AppConfig, redis: RedisState) -> tuple[Access, KeyStore]:
    """Keys, JWTs, quotas, the brute-force guard and the security log of one replica."""
    auth, gw = config.auth, config.gateway
    # With auth off there may be no pepper yet; no key is verified then.
    pepper = read_pepper(config.secrets_dir) if auth.enabled else b"auth-disabled"
    keys = KeyStore(redis, pepper)
    verifier = None
    if auth.enabled and auth.jwt.enabled:
        from deployments.gateway.auth.jwt_tokens import JWTVerifier

        verifier = JWTVerifier(auth.jwt, auth.default_limits)
    access = Access(
        settings=auth,
        authenticator=Authenticator(auth, keys, verifier),
        quotas=Quotas(redis),
        guard=FailureGuard(redis, auth.failed_attempts_free, auth.failure_delay_s),
        security=SecurityLog(
            config.security_log_path, max_bytes=gw.audit_max_bytes, backups=gw.audit_backups
        ),
    )
    return access, keys


def build_services(
    config: AppConfig,
    llm: DeploymentHandle,
    embedding: DeploymentHandle,
    retriever: DeploymentHandle,
    metrics_handle: DeploymentHandle,
    replica: str,
) -> Services:
    gw = config.gateway
    knowledge_api = KnowledgeAPI(embedding, retriever, config.knowledge)
    audit = AuditLog(config.audit_path, max_bytes=gw.audit_max_bytes, backups=gw.audit_backups)
    metrics = MetricsRecorder(metrics_handle, config.metrics, replica)
    redis = RedisState(config.redis)
    access, keys = build_access(config, redis)
    store = SessionStore(redis, config.sessions)
    conversation = Conversation(
        store,
        QuestionCache(redis, config.cache, config.model_version),
        TokenCounter(config.model_path, config.sessions.message_overhead_tokens),
        metrics,
        config.llm.max_model_len,
        knowledge_api,
    )
    model_id = config.llm.model_id
    stages = {
        "identify": Identify(),
        "parse": Parse(model_id, gw.max_body_bytes, tuple(config.llm.model_aliases)),
        "authorize": Authorize(),
        "conversation": conversation,
        "retrieval": Retrieval(knowledge_api),
        "generation": Generation(llm, metrics, model_id, gw.replica_failure_retries),
    }
    pipeline = Pipeline(stages, Record(conversation, metrics, audit, model_id, replica, access.quotas))
    jobs = IngestionJobs(redis, knowledge_api, gw.ingestion_job_ttl_s, gw.ingestion_job_stale_s)
    # The Batch API: files on the head node's disk (every gateway replica runs there), records in Redis,
    # rows through the same pipeline as online requests.
    batch_files = BatchFiles(redis, config.data_dir / "batches" / "files", gw)
    records = BatchRecords(redis, gw.batch_ttl_s)
    runner = BatchRunner(
        records, batch_files, pipeline, audit, access.quotas, keys, config.auth.default_limits, gw
    )
    return Services(
        config,
        llm,
        knowledge_api,
        store,
        metrics,
        pipeline,
        audit,
        access,
        keys,
        jobs,
        batch_files,
        Batches(records, batch_files, runner, gw.batch_stale_s),
        created=int(time.time()),
    )


@serve.deployment(name="Gateway")
@serve.ingress(app)
class Gateway:
    async def __init__(
        self,
        llm: DeploymentHandle,
        embedding: DeploymentHandle,
        retriever: DeploymentHandle,
        metrics: DeploymentHandle,
        config: dict[str, Any],
    ) -> None:
        replica = serve.get_replica_context().replica_tag
        built = build_services(AppConfig.model_validate(config), llm, embedding, retriever, metrics, replica)
        verifier = built.access.authenticator.jwt
        if verifier is not None:
            await verifier.start()  # type: ignore[attr-defined]  # the JWKS is loaded before traffic
        services.install(built)
