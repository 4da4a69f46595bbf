"""Two Ray nodes on this host, each declaring GPUs: replicas spread, a node lost, autoscaling under Locust.

The scenario is `raychat bench multinode` (cluster/bench/multinode.py), run here through the CLI on the
test settings; this test checks what it observed. It needs the host to itself, so it stops the shared
stack first and runs last (`restarts_stack`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, Stack


@pytest.mark.restarts_stack
def test_two_nodes_survive_a_node_loss_and_autoscale(stack: Stack, tmp_path: Path) -> None:
    assert stack.raychat("down", timeout=180).returncode == 0
    # A short hold: the test checks that the load reached max replicas and fell back, not for how long.
    run = stack.raychat("bench", "multinode", "--out", str(tmp_path), "--hold-s", "3", timeout=1800)
    report_file = tmp_path / "multinode.json"
    assert report_file.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    # Kept for the closing note and for a look after a failure.
    shutil.copy(report_file, ROOT / ".test-data" / "logs" / "multinode-test.json")
    report = json.loads(report_file.read_text())
    assert run.returncode == 0, (report.get("failed_step"), run.stderr[-3000:])

    start = report["start"]
    assert start["llm_nodes"] == 2 and start["head_has_llm_replica"], start  # min 2, one per node

    loss = report["node_loss"]
    assert loss["requests"] > 0 and loss["failed"] == 0, loss  # the service kept answering
    assert loss["replacement_has_llm_replica"], loss  # Serve placed the lost replica on the spare node
    assert loss["lost_node_id"] not in loss["llm_replicas_per_node"]

    scale = report["scale"]
    running = [sample[1] for sample in report["samples"]]
    assert max(running) == report["max_replicas"] and running[-1] == report["min_replicas"]
    assert sum(scale["llm_replicas_per_node_at_max"].values()) == report["max_replicas"]
    assert scale["locust_requests"] > 0 and scale["locust_failures"] == 0, scale
    assert (tmp_path / "multinode.md").exists() and (tmp_path / "multinode.png").exists()
