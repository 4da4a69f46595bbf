"""Health, readiness, the model list and the Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from deployments.gateway import services
from deployments.gateway.auth.permissions import identity_of, require_admin
from deployments.gateway.errors import error_response
from deployments.gateway.protocol import APIError, ModelCard, ModelList
from deployments.gateway.routes import ERRORS

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Open to anyone (load balancers), so it says nothing beyond ready or not."""
    svc = services.of(request)
    try:
        await asyncio.wait_for(svc.llm.check_health.remote(), timeout=svc.config.gateway.readiness_timeout_s)
    except Exception:  # any failure to answer means not ready
        return error_response(APIError(503, "not ready", code="not_ready"))
    return JSONResponse({"status": "ready"})


def _cards(request: Request) -> list[ModelCard]:
    """The served model, then each alias it answers to (names it had before an upgrade)."""
    svc = services.of(request)
    config = svc.config
    served = ModelCard(
        id=svc.model_id,
        created=svc.created,
        max_model_len=config.llm.max_model_len,
        version=config.model_version,
    )
    aliases = [
        served.model_copy(update={"id": a, "alias_of": svc.model_id}) for a in config.llm.model_aliases
    ]
    return [served, *aliases]


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=_cards(request))


@router.get("/v1/models/{model:path}", response_model=ModelCard, responses=ERRORS)
async def get_model(model: str, request: Request) -> ModelCard:
    for card in _cards(request):
        if card.id == model:
            return card
    raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    require_admin(identity_of(request.scope.get("state")), "read the metrics")
    metrics = services.of(request).metrics
    await metrics.flush()
    return Response(await metrics.aggregator.render.remote(), media_type=CONTENT_TYPE_LATEST)
