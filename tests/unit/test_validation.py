from __future__ import annotations

from typing import Any

import pytest

from deployments import validation
from deployments.errors import APIError

MODEL = "smollm2-135m-instruct"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def error_of(body: dict[str, Any]) -> APIError:
    with pytest.raises(APIError) as err:
        validation.chat_request(body, MODEL)
    return err.value


def test_valid_request_becomes_vllm_protocol_object() -> None:
    req = validation.chat_request(chat(temperature=0.5, max_tokens=8, stream=True), MODEL)
    assert req.model == MODEL and req.stream is True and req.max_tokens == 8


def test_missing_model_defaults_to_the_served_one() -> None:
    body = chat()
    del body["model"]
    assert validation.chat_request(body, MODEL).model == MODEL


def test_unknown_model_is_404() -> None:
    err = error_of(chat(model="gpt-9"))
    assert (err.status, err.param, err.code) == (404, "model", "model_not_found")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("max_tokens", 0),
        ("max_tokens", -3),
        ("max_completion_tokens", 0),
        ("top_p", 0),
        ("top_p", 1.5),
        ("n", 0),
        ("presence_penalty", 3),
    ],
)
def test_out_of_range_is_400_naming_the_parameter(field: str, value: float) -> None:
    err = error_of(chat(**{field: value}))
    assert (err.status, err.param) == (400, field)


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", "hot"), ("max_tokens", 2.5), ("max_tokens", True)]
)
def test_wrong_type_is_400(field: str, value: object) -> None:
    err = error_of(chat(**{field: value}))
    assert (err.status, err.param, err.code) == (400, field, "invalid_type")


def test_boundaries_are_accepted() -> None:
    validation.chat_request(chat(temperature=0, top_p=1, max_tokens=1), MODEL)
    validation.chat_request(chat(temperature=2), MODEL)


def test_messages_checks() -> None:
    assert error_of({"model": MODEL}).code == "missing_required_parameter"
    assert error_of({"model": MODEL, "messages": []}).code == "empty_array"
    assert error_of({"model": MODEL, "messages": "hi"}).code == "invalid_type"
    assert error_of({"model": MODEL, "messages": ["hi"]}).param == "messages[0]"
    err = error_of({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]})
    assert (err.status, err.param) == (400, "messages[0].role")


def test_content_of_wrong_type_is_400_from_vllm_protocol() -> None:
    err = error_of({"model": MODEL, "messages": [{"role": "user", "content": 42}]})
    assert err.status == 400 and err.param is not None and err.param.startswith("messages[0]")


def test_malformed_json() -> None:
    with pytest.raises(APIError) as err:
        validation.parse_json_object(b'{"messages": [')
    assert (err.value.status, err.value.code) == (400, "invalid_json")
    with pytest.raises(APIError):
        validation.parse_json_object(b"[1, 2]")
    with pytest.raises(APIError):
        validation.parse_json_object(b"\xff\xfe")


def test_completion_prompt_checks() -> None:
    assert validation.completion_request({"prompt": "Once", "max_tokens": 3}, MODEL).prompt == "Once"
    for bad in ({}, {"prompt": 5}, {"prompt": []}, {"prompt": [{"a": 1}]}):
        with pytest.raises(APIError) as err:
            validation.completion_request(dict(bad), MODEL)
        assert err.value.status == 400


def test_param_path() -> None:
    loc = ("messages", 0, "ChatCompletionUserMessageParam", "content", "str")
    assert validation.param_path(loc) == "messages[0].content"
