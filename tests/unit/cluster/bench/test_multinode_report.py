from __future__ import annotations

from pathlib import Path

from cluster.bench.multinode import Timeline
from cluster.bench.multinode_report import render


def test_table_and_chart_from_a_run(tmp_path: Path) -> None:
    timeline = Timeline()
    timeline.events = {"app running": 100.0, "gpu-a killed": 130.0, "max replicas running": 260.0}
    timeline.samples = [(100.0, 2, 0), (131.0, 1, 1), (190.0, 2, 0), (200.0, 2, 1), (260.0, 3, 0)]
    results = {
        "date": "2026-12-02 03:00",
        "cpus": 2,
        "min_replicas": 2,
        "max_replicas": 3,
        "target_ongoing": 1,
        "start": {"deploy_s": 95.0, "llm_nodes": 2},
        "node_loss": {
            "node_dead_after_s": 3.1,
            "recovered_after_s": 60.2,
            "clients": 2,
            "requests": 40,
            "ok": 40,
            "failed": 0,
            "replica_retries": 1.0,
        },
        "scale": {
            "scale_up_decided_after_s": 20.0,
            "scale_up_s": 110.0,
            "scale_down_s": 45.0,
            "users": 8,
            "locust_requests": 300,
            "locust_failures": 0,
            "backpressure_503": 0,
        },
    }
    table = render(tmp_path, results, timeline)
    assert "| node loss | kill → Ray marks the node dead | 3.1 |" in table
    assert "| scale up | load start → max replicas running | 110.0 |" in table
    assert "40 answered, 0 failed" in table
    assert (tmp_path / "multinode.md").read_text() == table
    assert (tmp_path / "multinode.png").stat().st_size > 1000
