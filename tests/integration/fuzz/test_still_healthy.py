"""(c) After all the fuzz, the stack is healthy: ready, a normal chat, completion, search and embedding."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from tests.integration.fuzz.common import MODEL, SMALL_MAX_TOKENS, Stored

pytestmark = pytest.mark.stack


# After all of it, the stored-state comparison included (conftest.py runs it last).
@pytest.mark.fuzz_afterwards(2)
def test_stack_healthy_afterwards(client: httpx.Client, stored: Stored) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    deadline = time.monotonic() + 30  # a request cut off by its timeout may still hold the engine briefly
    while ready.status_code != 200 and time.monotonic() < deadline:
        time.sleep(1)
        ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    reply = client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": SMALL_MAX_TOKENS,
        },
    )
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert (
        isinstance(answer["choices"][0]["message"]["content"], str)
        and answer["usage"]["completion_tokens"] >= 1
    )
    completion = client.post("/v1/completions", json={"model": MODEL, "prompt": "One, two,", "max_tokens": 2})
    assert completion.status_code == 200, completion.text
    hits = client.post(
        f"/v1/knowledge_bases/{stored.kb}/search", json={"query": "pump lubrication", "top_k": 1}
    )
    assert hits.status_code == 200 and isinstance(hits.json()["data"], list), hits.text
    assert math.isfinite(
        client.post("/v1/embeddings", json={"input": "still here"}).json()["data"][0]["embedding"][0]
    )
