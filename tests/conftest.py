"""One real stack (Ray head, Serve app with vLLM, nginx) per test session, started the way users start it.

The test stack has its own data dir and ports, so a developer's `make up` on the defaults is untouched.
It runs fp32 + enforce_eager (fast start, deterministic enough) with a single LLM replica.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parent.parent

TEST_ENV = {
    "RAYCHAT_DATA_DIR": str(ROOT / ".test-data"),
    "RAYCHAT_LLM__DTYPE": "float32",
    "RAYCHAT_LLM__ENFORCE_EAGER": "true",
    "RAYCHAT_LLM__MAX_REPLICAS": "1",
    "RAYCHAT_LLM__CPU_KVCACHE_SPACE_GIB": "2",
    "RAYCHAT_LLM__MAX_MODEL_LEN": "1024",
    "RAYCHAT_RAY__PORT": "26380",
    "RAYCHAT_RAY__DASHBOARD_PORT": "28265",
    "RAYCHAT_SERVE__PORT": "28000",
    "RAYCHAT_INGRESS__NGINX_PORT": "28080",
    "RAYCHAT_INGRESS__TRAEFIK_PORT": "28081",
    "RAYCHAT_REDIS__URL": "redis://127.0.0.1:26379/0",
    "RAYCHAT_REDIS__RETRY_INTERVAL_S": "1",
    # Two gateway replicas: sessions, the LRU and metrics are tested across replicas.
    "RAYCHAT_GATEWAY__NUM_REPLICAS": "2",
    # Both proxies in front, as `make up INGRESS=both`.
    "RAYCHAT_INGRESS__KIND": "both",
    # A small LLM queue, so the backpressure test can fill it: 16 running + 16 queued per gateway.
    "RAYCHAT_LLM__TARGET_ONGOING_REQUESTS": "8",
    "RAYCHAT_LLM__MAX_ONGOING_REQUESTS": "16",
    "RAYCHAT_LLM__MAX_QUEUED_REQUESTS": "16",
    # Compaction every few seconds, so a test can see a deleted document's rows go for good.
    "RAYCHAT_KNOWLEDGE__COMPACT_INTERVAL_S": "3",
    "HF_HUB_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


@dataclass
class Stack:
    url: str  # the public URL `raychat up` printed (nginx)
    serve_url: str
    traefik_url: str
    env: dict[str, str]
    up_output: str

    def openai_client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120)

    def raychat(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run_raychat(self.env, *args, timeout=timeout)


def run_raychat(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    raychat = Path(sys.executable).parent / "raychat"
    return subprocess.run(
        [str(raychat), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_env() -> dict[str, str]:
    return {**os.environ, **TEST_ENV}


def start_stack(env: dict[str, str]) -> Stack:
    result = run_raychat(env, "up")
    if result.returncode != 0:
        raise RuntimeError(
            f"raychat up failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    match = re.search(r"raychat is up: (http://\S+)/v1", result.stdout)
    assert match, result.stdout
    return Stack(
        url=match.group(1),
        serve_url=f"http://127.0.0.1:{TEST_ENV['RAYCHAT_SERVE__PORT']}",
        traefik_url=f"http://127.0.0.1:{TEST_ENV['RAYCHAT_INGRESS__TRAEFIK_PORT']}",
        env=env,
        up_output=result.stdout,
    )


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    env = test_env()
    # RAYCHAT_TEST_KEEP_STACK=1 (development only): reuse a running test stack and leave it up; `up` is
    # idempotent and redeploys only when config or code changed.
    keep = os.environ.get("RAYCHAT_TEST_KEEP_STACK") == "1"
    if not keep:
        run_raychat(env, "down", timeout=120)  # leftovers of an interrupted run
    started = start_stack(env)
    yield started
    if not keep:
        run_raychat(env, "down", timeout=120)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that restart the stack run last, so every other test shares the first start.
    items.sort(key=lambda item: item.get_closest_marker("restarts_stack") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "restarts_stack: stops and starts the shared stack; runs last")
