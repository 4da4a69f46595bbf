"""Quotas and revocation across both gateway replicas, and what a Redis outage does to both: known keys
keep working, unknown keys get 503 (fail closed), limits hold per replica, and all is back with Redis."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from cluster import processes, redis_server
from cluster.settings import RaychatSettings, load_settings
from tests.conftest import TEST_ENV, Stack
from tests.integration.identity_helpers import call, make_key

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def settings(stack: Stack) -> RaychatSettings:
    import os

    saved = dict(os.environ)
    os.environ.update(TEST_ENV)
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def fresh_minute() -> None:
    """Waits out the end of a minute: the request window is the UTC minute, and a test that straddles
    two would get twice the limit."""
    if time.time() % 60 > 40:
        time.sleep(61 - time.time() % 60)


def chat(stack: Stack, key: str, question: str, max_tokens: int = 1) -> httpx.Response:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    return call(f"{stack.serve_url}/v1/chat/completions", "POST", key, json=body)


def test_requests_per_minute_hold_summed_over_both_replicas(stack: Stack) -> None:
    key = make_key(stack, "user", [], rpm=6)
    fresh_minute()
    question = f"limit me {uuid.uuid4().hex}"  # the same question: answers after the first are cached
    responses = [chat(stack, key.key, question) for _ in range(10)]
    statuses = [r.status_code for r in responses]
    replicas = {r.headers.get("x-raychat-replica") for r in responses if r.status_code == 200}
    assert statuses.count(200) == 6 and statuses.count(429) == 4, (statuses, replicas)
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "6"
    assert {"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", "x-ratelimit-limit-tokens"} <= set(
        ok.headers
    )
    refused = responses[-1]
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")


@pytest.mark.parametrize("limit", ["tpm", "daily_tokens"])
def test_token_limits(stack: Stack, limit: str) -> None:
    key = make_key(stack, "user", [], **{limit: 20})
    fresh_minute()
    first = chat(stack, key.key, f"count my tokens {uuid.uuid4().hex}", max_tokens=8)
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] > 20
    time.sleep(0.5)  # the tokens are charged once the answer is complete
    refused = chat(stack, key.key, "and now?")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    retry = int(refused.headers["retry-after"])
    assert (retry <= 60) if limit == "tpm" else (retry > 0 and "Daily" in refused.text)


def warm(stack: Stack, key: str, rounds: int = 16) -> Counter[int]:
    """Calls enough times that both gateway replicas have verified (and cached) the key."""
    return Counter(call(f"{stack.serve_url}/v1/models", "GET", key).status_code for _ in range(rounds))


def test_revocation_reaches_both_replicas_within_5_seconds(stack: Stack) -> None:
    key = make_key(stack, "user", [])
    assert warm(stack, key.key) == Counter({200: 16})
    assert stack.http.delete(f"{stack.url}/v1/admin/keys/{key.id}").status_code == 200
    time.sleep(5)
    assert warm(stack, key.key) == Counter({401: 16})


@pytest.fixture
def redis_down(stack: Stack, settings: RaychatSettings) -> Iterator[None]:
    assert processes.stop(settings.run_dir, redis_server.NAME)
    try:
        yield
    finally:
        redis_server.start(settings)


def test_redis_outage_fails_closed_and_limits_locally(stack: Stack, settings: RaychatSettings) -> None:
    limited = make_key(stack, "user", [], rpm=1000)
    never_used = make_key(stack, "user", [])
    warm(stack, stack.admin_key)
    warm(stack, limited.key)
    # Its limit drops to 2; after the cache period each replica reads the new record on its next call.
    assert stack.http.patch(f"{stack.url}/v1/admin/keys/{limited.id}", json={"rpm": 2}).status_code == 200
    time.sleep(2.5)
    warm(stack, limited.key)
    assert processes.stop(settings.run_dir, redis_server.NAME)
    try:
        assert warm(stack, stack.admin_key, 6) == Counter({200: 6})  # verified recently: keeps working
        unknown = call(f"{stack.serve_url}/v1/models", "GET", never_used.key)
        assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "auth_unavailable"
        assert "retry-after" in unknown.headers
        local = warm(stack, limited.key, 10)  # each replica allows 2 in its own window
        assert local[200] <= 4 and local[429] >= 6 and set(local) <= {200, 429}, local
        made = stack.http.post(f"{stack.url}/v1/admin/keys", json={"name": "x", "role": "user"})
        assert made.status_code == 503
    finally:
        assert redis_server.start(settings)
    deadline = time.monotonic() + 20
    status = 0
    while time.monotonic() < deadline and status != 200:
        time.sleep(1.1)  # each replica retries Redis after redis.retry_interval_s
        status = call(f"{stack.serve_url}/v1/models", "GET", never_used.key).status_code
    assert status == 200
    assert make_key(stack, "user", []).key


def test_failed_credentials_are_slowed_per_address(stack: Stack) -> None:
    free = int(TEST_ENV["RAYCHAT_AUTH__FAILED_ATTEMPTS_FREE"])
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    fresh_minute()  # failures are counted per UTC minute
    before = _security_lines()
    for _ in range(free + 2):
        response = call(f"{stack.serve_url}/v1/models", "GET", "rc-bad", headers_extra={"X-Real-IP": address})
        assert response.status_code == 401
    lines = [line for line in _security_lines()[len(before) :] if f'"address":"{address}"' in line]
    slowed = [line for line in lines if '"slowed":true' in line]
    assert len(lines) == free + 2 and len(slowed) >= 2, lines[-3:]


def _security_lines() -> list[str]:
    from pathlib import Path

    path = Path(TEST_ENV["RAYCHAT_DATA_DIR"]) / "logs" / "security.jsonl"
    return path.read_text().splitlines() if path.exists() else []
