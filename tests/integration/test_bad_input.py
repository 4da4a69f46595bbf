"""Every bad input gets its status and OpenAI's error body, through nginx, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Stack

MODEL = "smollm2-135m-instruct"
USER = [{"role": "user", "content": "hi"}]


def post(stack: Stack, path: str, **kwargs: Any) -> httpx.Response:
    return stack.http.post(f"{stack.url}{path}", timeout=120, **kwargs)


def assert_error(resp: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_unknown_model_404(stack: Stack) -> None:
    error = assert_error(
        post(stack, "/v1/chat/completions", json={"model": "gpt-404", "messages": USER}), 404
    )
    assert error["code"] == "model_not_found"
    assert_error(post(stack, "/v1/completions", json={"model": "gpt-404", "prompt": "x"}), 404)
    assert_error(stack.http.get(f"{stack.url}/v1/models/gpt-404"), 404)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": 2.1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"temperature": "warm"}, "temperature"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "robot", "content": "beep"}]}, "messages[0].role"),
    ],
)
def test_invalid_parameters_400(stack: Stack, extra: dict[str, Any], param: str) -> None:
    body = {"model": MODEL, "messages": USER, **extra}
    assert_error(post(stack, "/v1/chat/completions", json=body), 400, param)


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_context_400(stack: Stack, stream: bool) -> None:
    long = " ".join(["word"] * 3000)  # well past the test stack's 1024-token context
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": long}],
        "max_tokens": 5,
        "stream": stream,
    }
    error = assert_error(post(stack, "/v1/chat/completions", json=body), 400)
    assert "context length" in error["message"]
    assert error["code"] == "context_length_exceeded"


def test_malformed_json_400(stack: Stack) -> None:
    resp = post(
        stack, "/v1/chat/completions", content=b'{"model": ', headers={"Content-Type": "application/json"}
    )
    assert assert_error(resp, 400)["code"] == "invalid_json"


def test_body_over_limit_413(stack: Stack) -> None:
    big = b'{"messages": "' + b"a" * (10 * 1024 * 1024 + 10) + b'"}'
    resp = post(stack, "/v1/chat/completions", content=big, headers={"Content-Type": "application/json"})
    assert assert_error(resp, 413)["code"] == "request_too_large"
    # the gateway enforces the same limit when reached without the proxy
    resp = stack.http.post(f"{stack.serve_url}/v1/chat/completions", content=big, timeout=60)
    assert_error(resp, 413)


def test_unknown_route_and_method(stack: Stack) -> None:
    assert_error(stack.http.get(f"{stack.url}/v1/nothing-here"), 404)
    assert_error(stack.http.get(f"{stack.url}/v1/chat/completions"), 405)


def test_service_still_answers_after_bad_input(stack: Stack) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 3}
    assert post(stack, "/v1/chat/completions", json=body).status_code == 200
