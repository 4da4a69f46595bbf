from __future__ import annotations

from types import SimpleNamespace

from deployments.gateway.errors import error_response, from_engine_error
from deployments.gateway.protocol import APIError


def test_body_is_openai_format() -> None:
    body = APIError(404, "no such model", param="model", code="model_not_found").body()
    assert body == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_type_follows_status() -> None:
    assert APIError(503, "busy").type == "service_unavailable"
    assert APIError(500, "boom").type == "server_error"
    assert APIError(429, "slow down").type == "rate_limit_error"


def test_engine_error_keeps_status_and_flags_context_length() -> None:
    info = SimpleNamespace(
        message="This model's maximum context length is 1024 tokens. However, ...",
        type="BadRequestError",
        param="input_tokens",
        code=400,
    )
    err = from_engine_error(SimpleNamespace(error=info))
    assert (err.status, err.code, err.param) == (400, "context_length_exceeded", "input_tokens")


def test_engine_error_with_odd_code_becomes_500() -> None:
    err = from_engine_error(SimpleNamespace(error=SimpleNamespace(message="x", code=0, param=None)))
    assert err.status == 500


def test_headers_reach_the_response() -> None:
    response = error_response(APIError(503, "full", headers={"Retry-After": "1"}))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
