"""The shipped Prometheus scrape config and Grafana dashboard parse and use the metrics we export."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from deployments.metrics import METRICS

MONITORING = Path(__file__).resolve().parents[3] / "cluster" / "monitoring"


def test_scrape_config_targets_the_service_metrics_path() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["raychat"]["metrics_path"] == "/metrics"
    assert jobs["raychat"]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]


def test_dashboard_queries_every_exported_metric() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in [*METRICS, "knowledge_cache_hit_rate"]:
        assert name in exprs, name
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
