"""The batch-chat job's pure logic: row checks and output lines (no Ray)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cluster.jobs import batch_rows
from cluster.jobs.batch_rows import BadRow, ChatRow

MODEL = "smollm2-135m-instruct"
USER = [{"role": "user", "content": "hi"}]


def line(custom_id: Any = "a", **body: Any) -> str:
    body.setdefault("messages", USER)
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def parse(text: str, rag: bool = False) -> ChatRow | BadRow:
    return batch_rows.parse_line(text, 7, model_id=MODEL, rag=rag)


def bad(text: str, rag: bool = False) -> BadRow:
    row = parse(text, rag)
    assert isinstance(row, BadRow), row
    return row


def output(custom_id: str, tokens: int = 4, error: str = "") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "generated_text": "hello",
        "num_input_tokens": 5,
        "num_generated_tokens": tokens,
        "__inference_error__": error,
    }


# --- valid rows -----------------------------------------------------------------------------------------


def test_valid_row_gets_every_sampling_key_with_defaults() -> None:
    row = parse(line(model=MODEL))
    assert isinstance(row, ChatRow)
    assert row.custom_id == "a" and row.line == 7 and row.messages == USER
    # Fixed keys: one Arrow struct for the column, and vLLM never sees a None it cannot take.
    assert row.sampling == {
        "max_tokens": None,
        "temperature": 1.0,
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_k": 0,
        "seed": None,
        "stop": None,
    }


def test_sampling_values_are_normalised() -> None:
    row = parse(line(temperature=0, top_p=0.5, max_tokens=8, seed=3, stop="\n", top_k=40))
    assert isinstance(row, ChatRow)
    assert row.sampling["temperature"] == 0.0 and isinstance(row.sampling["temperature"], float)
    assert row.sampling["max_tokens"] == 8 and row.sampling["seed"] == 3 and row.sampling["top_k"] == 40
    assert row.sampling["stop"] == ["\n"]
    newer = parse(line(max_tokens=8, max_completion_tokens=16))
    assert isinstance(newer, ChatRow) and newer.sampling["max_tokens"] == 16


def test_text_parts_and_extra_message_keys() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    row = parse(line(messages=[{"role": "user", "content": parts, "name": "x"}]))
    assert isinstance(row, ChatRow) and row.messages == [{"role": "user", "content": "a\nb"}]


def test_knowledge_base_rows_take_top_k_as_retrieval_depth() -> None:
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}, *USER]
    row = parse(line(messages=msgs, top_k=3, search_mode="vector"), rag=True)
    assert isinstance(row, ChatRow)
    assert row.top_k == 3 and row.search_mode == "vector" and row.sampling["top_k"] == 0
    assert row.question == "hi"


# --- bad rows: recorded, never dropped --------------------------------------------------------------------


def test_invalid_json_gets_a_line_id() -> None:
    row = bad("{not json")
    assert row.custom_id == "line-7" and row.code == "invalid_json"
    assert bad("[1, 2]").custom_id == "line-7"


@pytest.mark.parametrize("ident", [{}, {"custom_id": ""}, {"custom_id": 5}])
def test_missing_or_invalid_custom_id(ident: dict[str, Any]) -> None:
    row = bad(json.dumps({**ident, "body": {"messages": USER}}))
    assert row.custom_id == "line-7" and row.code == "invalid_custom_id"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"messages": []}, "empty_array"),
        ({"messages": "hi"}, "invalid_type"),
        ({}, "missing_required_parameter"),
        ({"messages": ["hi"]}, "invalid_type"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "invalid_value"),
        ({"messages": [{"role": "user"}]}, "invalid_type"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "invalid_type"),
    ],
)
def test_bad_messages(body: dict[str, Any], code: str) -> None:
    row = bad(json.dumps({"custom_id": "a", "body": body}))
    assert row.custom_id == "a" and row.code == code and "messages" in row.message


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"temperature": 3}, "invalid_value"),
        ({"temperature": "hot"}, "invalid_type"),
        ({"top_p": 0}, "invalid_value"),
        ({"max_tokens": 0}, "invalid_value"),
        ({"max_tokens": 1.5}, "invalid_type"),
        ({"max_tokens": True}, "invalid_type"),
        ({"stop": [1]}, "invalid_type"),
        ({"n": 2}, "unsupported_parameter"),
        ({"logprobs": True}, "unsupported_parameter"),
        ({"search_mode": "vector"}, "unsupported_parameter"),  # only with a knowledge base
        ({"model": "gpt-4o"}, "model_not_found"),
    ],
)
def test_bad_sampling_params(params: dict[str, Any], code: str) -> None:
    row = bad(line(**params))
    assert row.code == code and row.custom_id == "a"
    record = row.record()
    assert record == {
        "custom_id": "a",
        "error": {"message": row.message, "type": "invalid_request_error", "code": code},
    }


def test_bad_rows_with_a_knowledge_base() -> None:
    assert bad(line(top_k=0), rag=True).code == "invalid_value"
    assert bad(line(search_mode="fuzzy"), rag=True).code == "invalid_value"
    assert "user message" in bad(line(messages=[{"role": "system", "content": "s"}]), rag=True).message
    assert bad(json.dumps({"custom_id": "a", "body": "x"})).code == "invalid_type"


def test_engine_record_formats_an_openai_completion() -> None:
    row = parse(line(max_tokens=4))
    assert isinstance(row, ChatRow)
    sources = [{"document": "d.md", "chunk": 0}]
    record = batch_rows.engine_record(
        row, output("a"), model_id=MODEL, max_model_len=2048, sources=sources, created=1
    )
    response = record["response"]
    assert record["custom_id"] == "a" and response["id"].startswith("chatcmpl-")
    assert response["object"] == "chat.completion" and response["model"] == MODEL and response["created"] == 1
    assert response["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "length"}
    ]
    assert response["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert response["sources"] == sources
    short = batch_rows.engine_record(row, output("a", tokens=2), model_id=MODEL, max_model_len=2048)
    assert short["response"]["choices"][0]["finish_reason"] == "stop" and "sources" not in short["response"]


def test_engine_errors_become_error_records() -> None:
    row = parse(line())
    assert isinstance(row, ChatRow)
    failed = batch_rows.engine_record(
        row, output("a", error="ValueError: boom"), model_id=MODEL, max_model_len=64
    )
    assert failed == {
        "custom_id": "a",
        "error": {"message": "ValueError: boom", "type": "server_error", "code": "inference_failed"},
    }
    long = output("a", error="VLLMValidationError: prompt is longer than the maximum model length")
    assert batch_rows.engine_record(row, long, model_id=MODEL, max_model_len=64)["error"]["code"] == (
        "context_length_exceeded"
    )


def test_context_check_and_engine_item() -> None:
    assert batch_rows.context_error(100, 100, 2048) is None
    assert batch_rows.context_error(100, None, 2048) is None
    assert "2100 tokens (2000 in the messages, 100 in the completion)" in str(
        batch_rows.context_error(2000, 100, 2048)
    )
    assert batch_rows.context_error(2048, None, 2048) is not None
    row = parse(line())
    assert isinstance(row, ChatRow)
    item = batch_rows.engine_item(row, [1, 2, 3])
    assert item == {"custom_id": "a", "tokenized_prompt": [1, 2, 3], "sampling_params": row.sampling}
    assert item["sampling_params"] is not row.sampling
