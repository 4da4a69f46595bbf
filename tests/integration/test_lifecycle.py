"""`make down` then `make up` works again, on the same data; `raychat status` reports the stack."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.conftest import ROOT, Stack


def test_status_reports_nodes_deployments_and_url(stack: Stack) -> None:
    result = stack.raychat("status", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["url"] == stack.url
    assert report["ray_head"] == "running" and report["ingress"]["nginx"] == "running"
    assert report["nodes"] and all(node["alive"] for node in report["nodes"])
    assert "Gateway" in report["deployments"] and "RUNNING" in report["deployments"]


def test_up_again_is_harmless(stack: Stack) -> None:
    result = stack.raychat("up", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "deploying" not in result.stdout  # same config: nothing redeployed
    assert httpx.get(f"{stack.url}/readyz", timeout=30).status_code == 200


@pytest.mark.restarts_stack
def test_make_down_then_make_up(stack: Stack) -> None:
    down = subprocess.run(
        ["make", "down"], cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=180
    )
    assert down.returncode == 0, down.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.url}/healthz", timeout=5)
    assert (ROOT / ".test-data" / "models").exists()  # data kept
    up = subprocess.run(["make", "up"], cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert f"raychat is up: {stack.url}/v1" in up.stdout
    reply = stack.http.post(
        f"{stack.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        timeout=120,
    )
    assert reply.status_code == 200
