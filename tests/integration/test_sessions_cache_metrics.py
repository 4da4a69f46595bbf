"""Sessions, the question cache, Prometheus metrics and a Redis outage on the real stack (two gateway
replicas, the valkey server `raychat up` runs, vLLM, nginx in front)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster import processes, redis_server
from cluster.settings import RaychatSettings, load_settings
from tests.conftest import TEST_ENV, Stack

CHAT = "/v1/chat/completions"


def chat(stack: Stack, content: str, **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", {})
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}
    return stack.http.post(f"{stack.url}{CHAT}", json=body, headers=headers, timeout=120)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> RaychatSettings:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_session_continues_across_replicas_and_lru_is_never_stale(stack: Stack) -> None:
    session = f"s-{uuid.uuid4().hex}"
    replicas: list[str] = []
    turns = 0
    # Serve picks a replica per request; keep going until the session has gone A -> B -> A, the case
    # where A's LRU entry is out of date (bounded: 24 turns of 4 tokens).
    while turns < 24:
        resp = chat(stack, f"turn {turns}", session_id=session, temperature=0.7)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-session-id"] == session
        assert resp.headers["x-session-history"] == str(2 * turns)  # every earlier turn, none stale
        replicas.append(resp.headers["x-raychat-replica"])
        turns += 1
        if len(replicas) > 2 and replicas[-1] != replicas[-2] and replicas[-1] in replicas[:-2]:
            break
    assert len(set(replicas)) == 2, replicas

    stored = stack.http.get(f"{stack.url}/v1/sessions/{session}", timeout=30).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * turns
    assert stored["messages"][0]["content"] == "turn 0"

    # The header works as well as the field.
    resp = chat(stack, "by header", headers={"X-Session-ID": session})
    assert resp.headers["x-session-history"] == str(2 * turns)

    assert stack.http.delete(f"{stack.url}/v1/sessions/{session}", timeout=30).status_code == 200
    missing = stack.http.get(f"{stack.url}/v1/sessions/{session}", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "session_not_found"
    assert stack.http.delete(f"{stack.url}/v1/sessions/{session}", timeout=30).status_code == 404
    assert chat(stack, "again", session_id=session).headers["x-session-history"] == "0"


def test_session_through_openai_client(stack: Stack) -> None:
    client = stack.openai_client()
    session = f"oa-{uuid.uuid4().hex}"
    for expected in ("0", "2"):
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=4,
            extra_body={"session_id": session},
        )
        assert raw.headers["x-session-history"] == expected
        assert raw.parse().choices[0].message.content is not None


def test_history_is_trimmed_to_the_context_window(stack: Stack) -> None:
    session = f"long-{uuid.uuid4().hex}"
    long_text = "word " * 380  # ~380 tokens; the test stack's max_model_len is 1024
    history = []
    for _ in range(3):
        resp = chat(stack, long_text, session_id=session, temperature=0.7)
        assert resp.status_code == 200, resp.text
        history.append(int(resp.headers["x-session-history"]))
    assert history == [0, 2, 2]  # the oldest turn was dropped, the request still fits


def test_bad_session_id_and_cache_flag(stack: Stack) -> None:
    resp = chat(stack, "x", session_id="../etc/passwd")
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "session_id"
    resp = chat(stack, "x", cache="yes")
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "cache"


def test_question_cache_hits_plain_and_streamed(stack: Stack) -> None:
    question = f"In one word, what colour is the sky? ({uuid.uuid4().hex[:8]})"
    first = chat(stack, question, temperature=0)
    second = chat(stack, "  " + question.replace(" ", "  ") + " ", temperature=0)  # same once normalised
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.json()["choices"] == first.json()["choices"]

    client = stack.openai_client()

    def streamed() -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": question}],
            max_tokens=4,
            temperature=0,
            stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
        return raw.headers["x-cache"], text

    (miss, text_a), (hit, text_b) = streamed(), streamed()
    assert (miss, hit) == ("miss", "hit")
    assert text_a == text_b and text_a

    # Sampling requests are not cached unless they opt in; deterministic ones can opt out.
    sampled = [chat(stack, question, temperature=0.9).headers["x-cache"] for _ in range(2)]
    assert sampled == ["miss", "miss"]
    opted = [chat(stack, question, temperature=0.9, cache=True).headers["x-cache"] for _ in range(2)]
    assert opted == ["miss", "hit"]
    refused = [chat(stack, question, temperature=0, cache=False).headers["x-cache"] for _ in range(2)]
    assert refused == ["miss", "miss"]


def test_knowledge_base_change_invalidates_cached_answers(stack: Stack) -> None:
    kb = f"cache_{uuid.uuid4().hex[:8]}"
    base = stack.url
    assert stack.http.post(f"{base}/v1/knowledge_bases", json={"name": kb}, timeout=30).status_code == 201
    try:
        files = {"files": ("ray.md", b"Ray Serve scales model replicas with load.", "text/markdown")}
        assert stack.http.post(
            f"{base}/v1/knowledge_bases/{kb}/documents", files=files, timeout=120
        ).is_success

        def ask() -> str:
            resp = chat(stack, "What scales replicas?", temperature=0, knowledge_base=kb)
            assert resp.status_code == 200, resp.text
            assert resp.json()["sources"]
            return resp.headers["x-cache"]

        assert [ask(), ask()] == ["miss", "hit"]
        more = {"files": ("lance.md", b"LanceDB stores vectors on disk.", "text/markdown")}
        assert stack.http.post(
            f"{base}/v1/knowledge_bases/{kb}/documents", files=more, timeout=120
        ).is_success
        assert [ask(), ask()] == ["miss", "hit"]
        assert stack.http.delete(f"{base}/v1/knowledge_bases/{kb}/documents/lance.md", timeout=30).is_success
        assert ask() == "miss"
    finally:
        stack.http.delete(f"{base}/v1/knowledge_bases/{kb}", timeout=30)


def scrape(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = stack.http.get(f"{stack.url}/metrics", timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def wait_for(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "metrics did not move in time"
        time.sleep(0.5)


def test_metrics_move_with_known_requests(stack: Stack) -> None:
    model = "smollm2-135m-instruct"
    requests_ok = ("raychat_requests_total", frozenset({("endpoint", CHAT), ("status", "200")}))
    latency = ("model_inference_latency_seconds_count", frozenset({("model", model), ("endpoint", CHAT)}))
    hits = ("raychat_question_cache_lookups_total", frozenset({("result", "hit")}))
    tokens = ("raychat_tokens_total", frozenset({("model", model), ("direction", "completion")}))
    ttft = ("raychat_time_to_first_token_seconds_count", frozenset({("model", model), ("endpoint", CHAT)}))
    before = scrape(stack)
    question = f"metrics {uuid.uuid4().hex}"
    for _ in range(3):  # miss, hit, hit — spread over the two replicas by Serve
        assert chat(stack, question, temperature=0).status_code == 200
    streamed = stack.http.post(
        f"{stack.url}{CHAT}",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True},
        timeout=120,
    )
    assert streamed.status_code == 200

    def moved() -> bool:
        now = scrape(stack)
        return (
            now.get(requests_ok, 0) - before.get(requests_ok, 0) >= 4
            and now.get(latency, 0) - before.get(latency, 0) >= 4
            and now.get(hits, 0) - before.get(hits, 0) >= 2
            and now.get(ttft, 0) - before.get(ttft, 0) >= 1
            and now.get(tokens, 0) > before.get(tokens, 0)
        )

    wait_for(moved)
    now = scrape(stack)
    assert now[("concurrent_session_count", frozenset())] == 0  # nothing in flight at rest
    assert 0 < now[("knowledge_cache_hit_rate", frozenset())] <= 1


@pytest.fixture
def stopped_redis(stack: Stack, settings: RaychatSettings) -> Iterator[RaychatSettings]:
    # While Redis is down a gateway replica accepts only keys it verified within auth.outage_grace_s: have
    # both replicas verify the admin key first (bounded, as in the session test above).
    replicas: set[str] = set()
    for i in range(24):
        replicas.add(chat(stack, f"warm-up {i}", cache=False).headers.get("x-raychat-replica", ""))
        if len(replicas - {""}) >= 2:
            break
    assert processes.stop(settings.run_dir, redis_server.NAME)
    try:
        yield settings
    finally:
        redis_server.start(settings)


def test_redis_outage_degrades_then_recovers(stack: Stack, stopped_redis: RaychatSettings) -> None:
    question = f"outage {uuid.uuid4().hex}"
    for _ in range(2):  # no cache, and no failure because of it
        resp = chat(stack, question, temperature=0)
        assert resp.status_code == 200 and resp.headers["x-cache"] == "miss"
    refused = chat(stack, "remember me", session_id="outage-session")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "session_store_unavailable"
    assert "retry-after" in refused.headers
    assert stack.http.get(f"{stack.url}/v1/sessions/outage-session", timeout=30).status_code == 503

    assert redis_server.start(stopped_redis)
    deadline = time.monotonic() + 20
    states: list[str] = []
    while time.monotonic() < deadline:  # each replica retries after retry_interval_s on its own
        time.sleep(1.1)
        states = [chat(stack, question, temperature=0).headers["x-cache"] for _ in range(4)]
        if states[-3:] == ["hit"] * 3:
            break
    assert states[-3:] == ["hit"] * 3, states
    assert chat(stack, "remember me", session_id=f"back-{uuid.uuid4().hex}").status_code == 200
