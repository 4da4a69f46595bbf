from __future__ import annotations

from typing import Any

import pytest

from deployments.gateway import protocol as validation
from deployments.gateway.protocol import APIError

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


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"messages": [{"role": "user", "content": "a\\udfffb"}]}',
        b'{"\\ud800": 1}',
        b'{"temperature": NaN}',
        b'{"temperature": Infinity}',
        b'{"temperature": 1e400}',
        b'{"max_tokens": 1' + b"0" * 400 + b"}",
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}",
    ],
)
def test_json_that_nothing_downstream_can_hold_is_400(raw: bytes) -> None:
    with pytest.raises(APIError) as err:
        validation.parse_json_object(raw)
    assert err.value.status == 400


def test_a_valid_surrogate_pair_and_moderate_nesting_are_fine() -> None:
    body = validation.parse_json_object(b'{"content": "\\ud83d\\ude00", "a": ' + b"[" * 60 + b"]" * 60 + b"}")
    assert body["content"] == "\U0001f600"


def test_extension_fields_are_declared_and_never_reach_the_engine() -> None:
    req = validation.chat_request(
        chat(knowledge_base="docs", top_k=3, search_mode="fulltext", session_id="s-1", cache=True, seed=7),
        MODEL,
    )
    assert (req.knowledge_base, req.top_k, req.search_mode, req.session_id, req.cache) == (
        "docs",
        3,
        "fulltext",
        "s-1",
        True,
    )
    engine = req.engine_body()
    assert not {"knowledge_base", "top_k", "search_mode", "session_id", "cache"} & set(engine)
    assert engine["seed"] == 7 and engine["model"] == MODEL


def test_top_k_without_a_knowledge_base_is_sampling_top_k() -> None:
    assert validation.chat_request(chat(top_k=20), MODEL).engine_body()["top_k"] == 20


def test_the_session_header_stands_in_for_a_missing_session_id() -> None:
    assert validation.chat_request(chat(), MODEL, session_header="h-1").session_id == "h-1"
    assert validation.chat_request(chat(session_id="b-1"), MODEL, session_header="h-1").session_id == "b-1"
    with pytest.raises(APIError) as err:
        validation.chat_request(chat(), MODEL, session_header="bad id")
    assert err.value.param == "session_id"


def test_extension_field_errors_name_their_parameter() -> None:
    assert error_of(chat(knowledge_base="../etc")).param == "knowledge_base"
    assert error_of(chat(knowledge_base="kb", top_k=0)).param == "top_k"
    assert error_of(chat(search_mode="psychic")).param == "search_mode"
    assert error_of(chat(cache="yes")).param == "cache"
    with pytest.raises(APIError) as err:
        validation.completion_request({"prompt": "x", "session_id": "s"}, MODEL)
    assert err.value.param == "session_id"


def test_parsed_requests_are_frozen() -> None:
    req = validation.chat_request(chat(), MODEL)
    with pytest.raises(ValueError):
        req.model = "other"  # type: ignore[misc]


def test_an_alias_resolves_to_the_served_model() -> None:
    body = {"model": "old-name", "messages": [{"role": "user", "content": "hi"}]}
    assert validation.chat_request(body, MODEL, aliases=("old-name",)).model == MODEL
    completion = {"model": "old-name", "prompt": "Once"}
    assert validation.completion_request(completion, MODEL, aliases=("old-name",)).model == MODEL
    with pytest.raises(APIError) as refused:
        validation.chat_request(body, MODEL)
    assert refused.value.status == 404 and refused.value.code == "model_not_found"
