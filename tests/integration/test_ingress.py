"""Both proxies on the real stack: models, unbuffered streams, the proxy's own 413, failover when one of
two Serve upstreams is down, backpressure, and a short headless Locust run through each."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster import loadtest
from cluster.ingress import nginx, traefik
from cluster.settings import RaychatSettings, load_settings
from tests.conftest import ROOT, TEST_ENV, TLS_DIR, Stack, tls_context

MODEL = "smollm2-135m-instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Count from one to twenty."}]}


def entry_points(stack: Stack) -> dict[str, str]:
    return {"nginx": stack.url, "traefik": stack.traefik_url}


@pytest.mark.parametrize("proxy", ["nginx", "traefik"])
def test_proxy_lists_models_and_streams_unbuffered(stack: Stack, proxy: str) -> None:
    base = entry_points(stack)[proxy]
    assert stack.http.get(f"{base}/v1/models", timeout=30).json()["data"][0]["id"] == MODEL
    # ignore_eos: always 40 tokens (at temperature 1 an early end-of-sequence left too few to time).
    body = {**CHAT, "max_tokens": 40, "stream": True, "cache": False, "ignore_eos": True}
    arrivals: list[float] = []
    with stack.http.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic())
    # 40 tokens take well over 100 ms here; a buffering proxy would deliver them all at once.
    assert len(arrivals) > 3 and arrivals[-1] - arrivals[0] > 0.1


@pytest.mark.parametrize("proxy", ["nginx", "traefik"])
def test_proxy_refuses_an_upload_over_the_limit(stack: Stack, proxy: str) -> None:
    base = entry_points(stack)[proxy]
    big = b"x" * (64 * 1024 * 1024 + 1024)  # over gateway.max_upload_bytes
    resp = stack.http.post(
        f"{base}/v1/knowledge_bases/anything/documents",
        files={"files": ("big.txt", big, "text/plain")},
        timeout=120,
    )
    assert resp.status_code == 413
    assert "x-trace-id" not in resp.headers  # the proxy answered; the gateway never saw it
    if proxy == "nginx":  # in OpenAI's format, naming the upload limit (Traefik's own 413 is plain text)
        assert resp.json()["error"]["code"] == "request_too_large"
        assert str(64 * 1024 * 1024) in resp.json()["error"]["message"]


# --- failover: a second pair of proxies whose first upstream is a stopped Serve proxy ---------------
@pytest.fixture(scope="module")
def failover_proxies(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaychatSettings]:
    env_ports = {
        "nginx_port": 28180,
        "traefik_port": 28182,
        "nginx_https_port": 28185,
        "traefik_https_port": 28186,
    }
    data = tmp_path_factory.mktemp("failover")
    # The stack's certificates, as an edge host of its own gets them: Serve wants this client certificate.
    shutil.copytree(TLS_DIR, data / "tls")
    settings = load_settings(
        data_dir=data,
        ingress={
            **env_ports,
            "upstreams": ["127.0.0.1:28999", f"127.0.0.1:{TEST_ENV['RAYCHAT_SERVE__PORT']}"],
            "health_interval_s": 0.5,
        },
    )
    try:
        nginx.start(settings)
        traefik.start(settings)
        yield settings
    finally:
        traefik.stop(settings)
        nginx.stop(settings)


def test_requests_fail_over_when_one_serve_proxy_is_down(
    stack: Stack, failover_proxies: RaychatSettings
) -> None:
    settings = failover_proxies
    deadline = time.monotonic() + 20
    while traefik.server_status(settings).get("https://127.0.0.1:28999") != "DOWN":
        assert time.monotonic() < deadline, traefik.server_status(settings)
        time.sleep(0.3)
    ports = (settings.ingress.nginx_port, settings.ingress.traefik_port)
    for base in (f"http://127.0.0.1:{port}" for port in ports):
        for i in range(6):
            assert stack.http.get(f"{base}/v1/models", timeout=30).status_code == 200
            resp = stack.http.post(
                f"{base}/v1/chat/completions",
                json={**CHAT, "max_tokens": 2, "messages": [{"role": "user", "content": f"hi {i}"}]},
                timeout=120,
            )
            assert resp.status_code == 200, (base, resp.text)
    log = (settings.logs_dir / "nginx-error.log").read_text()
    assert "28999" in log  # nginx did try the stopped one, and moved on


# --- backpressure ----------------------------------------------------------------------------------
def test_full_llm_queue_answers_503_with_retry_after(stack: Stack) -> None:
    async def flood() -> list[httpx.Response]:
        body = {**CHAT, "max_tokens": 48, "cache": False, "ignore_eos": True}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(headers=stack.headers, timeout=300, limits=limits) as client:
            return await asyncio.gather(
                *(client.post(f"{stack.url}/v1/chat/completions", json=body) for _ in range(80))
            )

    responses = asyncio.run(flood())
    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert refused, "80 requests against 16 running + 2x16 queued should overflow the queue"
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
    assert any(r.status_code == 200 for r in responses)
    # and the service is fine afterwards
    after = stack.http.post(f"{stack.url}/v1/chat/completions", json={**CHAT, "max_tokens": 2}, timeout=60)
    assert after.is_success


# --- Locust ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("proxy", ["nginx", "traefik"])
def test_short_locust_run_has_no_failures(stack: Stack, proxy: str) -> None:
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "raychat"),
            "loadtest",
            "--ingress",
            proxy,
            "--users",
            "20",
            "--duration",
            "20s",
        ],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    stats = (loadtest.RESULTS / f"users20-{proxy}_stats.csv").read_text()
    aggregated = next(line for line in stats.splitlines() if ",Aggregated," in line).split(",")
    assert int(aggregated[2]) > 20 and int(aggregated[3]) == 0  # requests, failures
    assert "chat stream: time to first token" in stats


# --- direct ingress ----------------------------------------------------------------------------------
def test_proxies_reach_the_gateway_replicas_directly_over_mtls(stack: Stack) -> None:
    """Direct ingress: Nginx and Traefik send requests to the Gateway replicas' own ports, not through the
    Serve proxy, and those ports want raychat's client certificate as Serve's does."""
    first = int(TEST_ENV["RAYCHAT_SERVE__DIRECT_INGRESS_FIRST_PORT"])
    ports = range(first, first + 8)  # serve.direct_ingress_ports: 8
    listening = [p for p in ports if _accepts_tcp(p)]
    assert len(listening) == int(TEST_ENV["RAYCHAT_GATEWAY__NUM_REPLICAS"]), listening
    for port in listening:
        url = f"https://127.0.0.1:{port}/healthz"
        assert stack.http.get(url, timeout=10).status_code == 200  # the ingress's client certificate
        with httpx.Client(verify=tls_context(client_certificate=False), timeout=10) as ca_only:
            with pytest.raises(httpx.HTTPError):  # the TLS handshake fails without a client certificate
                ca_only.get(url)
    before = _log_size(stack)
    for base in (stack.url, stack.https_url):
        assert stack.http.get(f"{base}/v1/models", timeout=30).status_code == 200
    lines = (Path(stack.env["RAYCHAT_DATA_DIR"]) / "logs" / "nginx-access.log").read_text()[before:]
    # `up=` lists every address Nginx tried: a port no replica holds refuses at once and the next is
    # tried; the last one answered.
    tried = [
        line.split(" up=", 1)[1].split(" trace=")[0].split(", ")
        for line in lines.splitlines()
        if " up=" in line
    ]
    answered = {addresses[-1] for addresses in tried}
    assert answered and answered <= {f"127.0.0.1:{p}" for p in listening}, tried
    status = traefik.server_status(load_settings_for(stack))
    assert {u for u, s in status.items() if s == "UP"} >= {f"https://127.0.0.1:{p}" for p in listening}


def _accepts_tcp(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _log_size(stack: Stack) -> int:
    log = Path(stack.env["RAYCHAT_DATA_DIR"]) / "logs" / "nginx-access.log"
    return len(log.read_text()) if log.exists() else 0


def load_settings_for(stack: Stack) -> RaychatSettings:
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, stack.env):
        return load_settings()
