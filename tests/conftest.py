"""One real stack (Ray head, Serve app with vLLM, nginx) per test session, started the way users start it.

The test stack has its own data dir and ports, so a developer's `make up` on the defaults is untouched.
It runs fp32 + enforce_eager (fast start, deterministic enough) with a single LLM replica.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import httpx
import openai
import pytest

from tests import jwt_keys

ROOT = Path(__file__).resolve().parent.parent
JWT_DIR = ROOT / ".test-data" / "jwt"
TLS_DIR = ROOT / ".test-data" / "tls"

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
    # The Gateway replicas' own ports (direct ingress), apart from a `make up` stack's 30000.. on this host.
    "RAYCHAT_SERVE__DIRECT_INGRESS_FIRST_PORT": "29000",
    "RAYCHAT_INGRESS__NGINX_PORT": "28080",
    "RAYCHAT_INGRESS__TRAEFIK_PORT": "28081",
    "RAYCHAT_INGRESS__NGINX_HTTPS_PORT": "28443",
    "RAYCHAT_INGRESS__TRAEFIK_HTTPS_PORT": "28444",
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
    # Quotas far above what the suite and the fuzzer send (much more than a person would); the limit tests
    # make keys with small limits of their own.
    "RAYCHAT_AUTH__DEFAULT_LIMITS__RPM": "1000000",
    "RAYCHAT_AUTH__DEFAULT_LIMITS__TPM": "1000000000",
    # The brute-force guard: the refusal matrix sends about 150 bad credentials from 127.0.0.1 (those past
    # the free count wait 0.2 s each); the guard's own test spoofs another address straight at Serve.
    "RAYCHAT_AUTH__FAILED_ATTEMPTS_FREE": "60",
    "RAYCHAT_AUTH__FAILURE_DELAY_S": "0.2",
    # Organisation sign-on against a stand-in identity provider (tests/jwt_keys.py), whose JWKS file the
    # `stack` fixture writes before `up`.
    "RAYCHAT_AUTH__JWT__ENABLED": "true",
    "RAYCHAT_AUTH__JWT__JWKS_FILE": str(JWT_DIR / "jwks.json"),
    "RAYCHAT_AUTH__JWT__ISSUER": jwt_keys.ISSUER,
    "RAYCHAT_AUTH__JWT__AUDIENCE": jwt_keys.AUDIENCE,
    "RAYCHAT_AUTH__JWT__ROLE_MAP": '{"raychat-admins": "admin", "raychat-editors": "editor", '
    '"raychat-users": "user"}',
    "HF_HUB_OFFLINE": "1",
    # Ray drains a node for up to 30 s on SIGTERM so Serve can move replicas off it; every stop in the
    # suite ends the whole test cluster (a lost node is killed, not stopped), so nothing needs it.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def tls_context(*, client_certificate: bool = True) -> ssl.SSLContext:
    """Trusts the stack's private CA (`up` made it in .test-data/tls) and, by default, presents the
    ingress's client certificate, which Serve's port requires (mTLS); plain-HTTP URLs ignore both."""
    context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.crt"))
    if client_certificate:
        context.load_cert_chain(TLS_DIR / "ingress-client.crt", TLS_DIR / "ingress-client.key")
    return context


@dataclass
class Stack:
    url: str  # the public URL `raychat up` printed (nginx)
    serve_url: str
    traefik_url: str
    https_url: str  # nginx's HTTPS listener (the generated certificate, from the private CA)
    traefik_https_url: str
    env: dict[str, str]
    up_output: str
    admin_key: str  # <data_dir>/secrets/admin.key, written by `raychat up`
    service_key: str  # <data_dir>/secrets/service.key (role admin too: raychat's own tools)
    jwt: jwt_keys.Issuer | None = None  # signs tokens the stack accepts (organisation sign-on)

    @property
    def headers(self) -> dict[str, str]:
        """The admin key as a bearer token: what every test sends unless it checks a refusal."""
        return {"Authorization": f"Bearer {self.admin_key}"}

    @cached_property
    def http(self) -> httpx.Client:
        """A client that sends the admin key; `stack.http.get(url)` as `httpx.get(url)`. Closed by `stack`."""
        return httpx.Client(headers=self.headers, timeout=120, verify=tls_context())

    @cached_property
    def anonymous(self) -> httpx.Client:
        """A client without credentials, for the tests of refusals. Closed by `stack`."""
        return httpx.Client(timeout=120, verify=tls_context())

    def openai_client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.admin_key, max_retries=0, timeout=120)

    def close(self) -> None:
        for name in ("http", "anonymous"):
            client = self.__dict__.pop(name, None)
            if client is not None:
                client.close()

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
    secrets = Path(env["RAYCHAT_DATA_DIR"]) / "secrets"
    return Stack(
        url=match.group(1),
        serve_url=f"https://127.0.0.1:{TEST_ENV['RAYCHAT_SERVE__PORT']}",
        traefik_url=f"http://127.0.0.1:{TEST_ENV['RAYCHAT_INGRESS__TRAEFIK_PORT']}",
        https_url=f"https://127.0.0.1:{TEST_ENV['RAYCHAT_INGRESS__NGINX_HTTPS_PORT']}",
        traefik_https_url=f"https://127.0.0.1:{TEST_ENV['RAYCHAT_INGRESS__TRAEFIK_HTTPS_PORT']}",
        env=env,
        up_output=result.stdout,
        admin_key=read_key(secrets / "admin.key"),
        service_key=read_key(secrets / "service.key"),
    )


def read_key(path: Path) -> str:
    key = path.read_text().strip() if path.is_file() else ""
    assert key, f"`raychat up` succeeded but wrote no key to {path}"
    return key


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    env = test_env()
    # RAYCHAT_TEST_KEEP_STACK=1 (development only): reuse a running test stack and leave it up; `up` is
    # idempotent and redeploys only when config or code changed.
    keep = os.environ.get("RAYCHAT_TEST_KEEP_STACK") == "1"
    if not keep:
        run_raychat(env, "down", timeout=120)  # leftovers of an interrupted run
    # A key id of its own per session: a kept stack's gateway sees an unknown kid and reloads the JWKS.
    issuer = jwt_keys.make_issuer(JWT_DIR, kid=f"test-{uuid.uuid4().hex[:8]}")
    started = start_stack(env)
    started.jwt = issuer
    yield started
    started.close()
    if not keep:
        run_raychat(env, "down", timeout=120)


@pytest.fixture(scope="session")
def jwt_issuer(stack: Stack) -> jwt_keys.Issuer:
    assert stack.jwt is not None
    return stack.jwt


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every other test shares the first start; then the tests that change the running stack in place
    # (upgrades: they begin from it as it is, and leave it down); the tests that restart it run last.
    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("restarts_stack") is not None:
            return 2
        return 1 if item.get_closest_marker("changes_stack") is not None else 0

    items.sort(key=order)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "restarts_stack: stops and starts the shared stack; runs last")
    config.addinivalue_line(
        "markers",
        "changes_stack: changes the running shared stack in place, then stops it; runs before "
        "the restarts_stack tests",
    )
