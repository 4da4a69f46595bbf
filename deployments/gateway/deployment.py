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

from deployments.config import AppConfig
from deployments.gateway import middleware, services
from deployments.gateway.answer_cache import QuestionCache
from deployments.gateway.audit import AuditLog
from deployments.gateway.errors import install_error_handlers
from deployments.gateway.pipeline import Pipeline
from deployments.gateway.redis_state import RedisState
from deployments.gateway.routes import BODY_MODELS, generation, health, knowledge, sessions
from deployments.gateway.services import Services
from deployments.gateway.sessions import SessionStore, TokenCounter
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
for module in (health, generation, sessions, knowledge):
    app.include_router(module.router)
# The last added runs first: every request gets its trace id and audit line, then a path with control
# characters is refused before routing.
app.add_middleware(middleware.RefuseControlCharacters)
app.add_middleware(
    middleware.TraceAndAudit,
    audit_log=lambda: getattr(services.current(), "audit", None),
    metrics=lambda: getattr(services.current(), "metrics", None),
)


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
    store = SessionStore(redis, config.sessions)
    conversation = Conversation(
        store,
        QuestionCache(redis, config.cache),
        TokenCounter(config.model_path, config.sessions.message_overhead_tokens),
        metrics,
        config.llm.max_model_len,
        knowledge_api,
    )
    model_id = config.llm.model_id
    stages = {
        "identify": Identify(),
        "parse": Parse(model_id, gw.max_body_bytes),
        "conversation": conversation,
        "retrieval": Retrieval(knowledge_api),
        "generation": Generation(llm, metrics, model_id, gw.replica_failure_retries),
    }
    pipeline = Pipeline(stages, Record(conversation, metrics, audit, model_id, replica))
    return Services(config, llm, knowledge_api, store, metrics, pipeline, audit, created=int(time.time()))


@serve.deployment(name="Gateway")
@serve.ingress(app)
class Gateway:
    def __init__(
        self,
        llm: DeploymentHandle,
        embedding: DeploymentHandle,
        retriever: DeploymentHandle,
        metrics: DeploymentHandle,
        config: dict[str, Any],
    ) -> None:
        replica = serve.get_replica_context().replica_tag
        services.install(
            build_services(AppConfig.model_validate(config), llm, embedding, retriever, metrics, replica)
        )
