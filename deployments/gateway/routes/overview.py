"""`GET /v1/admin/cluster`: the cluster at a glance for the console (admin only): Ray's nodes, Serve's
replicas per deployment, and the Metrics deployment's cache hit rate and last minutes of traffic."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from fastapi import APIRouter, Request
from ray import serve

from deployments.gateway import services
from deployments.gateway.auth.permissions import identity_of, require_admin
from deployments.gateway.routes import ERRORS

router = APIRouter()


def _nodes() -> list[dict[str, Any]]:
    return [
        {
            "id": node["NodeID"],
            "address": node["NodeManagerAddress"],
            "alive": bool(node["Alive"]),
            "resources": {
                name: value
                for name, value in node.get("Resources", {}).items()
                if name in ("CPU", "GPU", "memory", "object_store_memory")
            },
        }
        for node in ray.nodes()
    ]


def _deployments() -> list[dict[str, Any]]:
    status = serve.status()
    return [
        {
            "app": app_name,
            "name": name,
            "status": str(getattr(deployment.status, "value", deployment.status)),
            "replicas": {str(getattr(k, "value", k)): n for k, n in deployment.replica_states.items()},
        }
        for app_name, app in status.applications.items()
        for name, deployment in app.deployments.items()
    ]


@router.get("/v1/admin/cluster", responses=ERRORS)
async def cluster_overview(request: Request) -> dict[str, Any]:
    require_admin(identity_of(request.scope.get("state")), "read the cluster's state")
    metrics = services.of(request).metrics
    await metrics.flush()
    # Both ask Ray's GCS or Serve's controller with blocking calls: off the replica's event loop.
    nodes, deployments, overview = await asyncio.gather(
        asyncio.to_thread(_nodes), asyncio.to_thread(_deployments), metrics.aggregator.overview.remote()
    )
    return {"object": "cluster", "nodes": nodes, "deployments": deployments, **overview}
