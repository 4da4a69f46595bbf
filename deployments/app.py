"""The Serve application graph: Gateway -> LLM deployment (also the `serve run` import path)."""

from __future__ import annotations

from typing import Any

from ray.serve.deployment import Application

from deployments.config import AppConfig
from deployments.embedding import EmbeddingDeployment
from deployments.gateway.deployment import Gateway
from deployments.llm import build_llm_app
from deployments.metrics import MetricsAggregator
from deployments.retriever import Retriever


def build_app(config: AppConfig | dict[str, Any]) -> Application:
    cfg = AppConfig.model_validate(config)
    llm_app = build_llm_app(cfg.llm, cfg.model_path, cfg.data_dir, cfg.rollout)
    rollout = cfg.rollout.deployment_options()  # replacements start before old replicas stop
    knowledge = cfg.knowledge.model_dump(mode="json")
    head = cfg.placement.head_resources()
    embedding = EmbeddingDeployment.options(
        **rollout,
        num_replicas=cfg.knowledge.embedding_replicas,
        ray_actor_options={
            "num_cpus": 0.25,
            "resources": head,
            "runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1"}},
        },
    ).bind(knowledge)
    # One retriever replica: the writer of the LanceDB tables on the head's disk (while it is replaced,
    # its successor writes beside it for a moment: LanceDB commits each write atomically).
    retriever = Retriever.options(
        **rollout, num_replicas=1, ray_actor_options={"num_cpus": 0.25, "resources": head}
    ).bind(embedding, knowledge, str(cfg.store_dir))
    metrics = MetricsAggregator.options(**rollout, ray_actor_options={"num_cpus": 0, "resources": head}).bind(
        cfg.metrics.model_dump(mode="json")
    )
    gateway = Gateway.options(
        **rollout,
        num_replicas=cfg.gateway.num_replicas,
        max_ongoing_requests=cfg.gateway.max_ongoing_requests,
        ray_actor_options={"num_cpus": cfg.gateway.num_cpus, "resources": head},
    )
    return gateway.bind(llm_app, embedding, retriever, metrics, cfg.model_dump(mode="json"))


def app_builder(args: dict[str, Any]) -> Application:
    """`serve run deployments.app:app_builder config=<AppConfig JSON file>`."""
    import json
    from pathlib import Path

    return build_app(json.loads(Path(args["config"]).read_text()))
