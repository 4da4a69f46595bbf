"""The official openai client against the real stack, through nginx."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import Stack

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return stack.openai_client()


def test_lists_the_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_non_streamed_chat_has_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_arrives_in_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to twenty."}],
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"cache": False},  # a cached replay would arrive at once
    )
    pieces, arrivals, usage = [], [], None
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 3 and "".join(pieces).strip()
    assert usage is not None and usage.completion_tokens > 0
    # chunks were not buffered into one delivery: 40 tokens take most of a second to generate here,
    # and a buffering proxy would hand them over within a millisecond of each other
    assert arrivals[-1] - arrivals[0] > 0.1


def test_raw_sse_ends_with_done(stack: Stack) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
    with stack.http.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert reply.choices[0].text and reply.usage and reply.usage.completion_tokens > 0


def test_health_and_readiness(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}  # open: nothing beyond status


def test_served_directly_by_serve_too(stack: Stack) -> None:
    assert stack.http.get(f"{stack.serve_url}/v1/models").json()["data"][0]["id"] == MODEL
