"""The Batch API's shapes: input lines checked one by one, output and error lines, the create body, and
objects the official client parses."""

from __future__ import annotations

import json
from typing import Any

import openai.types
import pytest

from deployments.gateway.protocol import APIError
from deployments.gateway.protocol.batches import (
    BATCH_ID,
    FILE_ID,
    Batch,
    BatchErrors,
    BatchRow,
    FileObject,
    LineError,
    answer_line,
    batch_create,
    check_line,
    line_error_line,
    list_limit,
    new_batch_id,
    new_file_id,
    scan,
)

CHAT = "/v1/chat/completions"


def line(**fields: Any) -> bytes:
    row = {"custom_id": "a", "method": "POST", "url": CHAT, "body": {"messages": []}, **fields}
    return json.dumps({k: v for k, v in row.items() if v is not None}).encode() + b"\n"


def test_a_good_line_is_a_row() -> None:
    row = check_line(line(), 3, CHAT, set())
    assert isinstance(row, BatchRow) and (row.line, row.custom_id, row.url) == (3, "a", CHAT)


def test_method_and_url_default_to_the_batch_endpoint() -> None:
    assert isinstance(check_line(line(method=None, url=None), 1, CHAT, set()), BatchRow)


def test_blank_lines_are_skipped() -> None:
    assert check_line(b"  \r\n", 1, CHAT, set()) is None


@pytest.mark.parametrize(
    ("raw", "code", "custom_id"),
    [
        (b'{"custom_id": ', "invalid_json_line", None),
        (b"[1, 2]", "invalid_json_line", None),
        (b'{"custom_id": "\\ud800", "body": {}}', "invalid_json_line", None),  # a lone surrogate
        (line(custom_id=None), "missing_custom_id", None),
        (line(custom_id=7), "missing_custom_id", None),
        (line(method="GET"), "invalid_method", "a"),
        (line(url="/v1/embeddings"), "mismatched_endpoint", "a"),
        (line(body=None), "invalid_body", "a"),
        (line(body=[1]), "invalid_body", "a"),
    ],
)
def test_a_bad_line_fails_on_its_own(raw: bytes, code: str, custom_id: str | None) -> None:
    checked = check_line(raw, 5, CHAT, set())
    assert isinstance(checked, LineError)
    assert (checked.code, checked.custom_id, checked.line) == (code, custom_id, 5)
    assert checked.listed().line == 5


def test_a_repeated_custom_id_fails_and_the_first_runs() -> None:
    seen: set[str] = set()
    assert isinstance(check_line(line(), 1, CHAT, seen), BatchRow)
    repeated = check_line(line(), 2, CHAT, seen)
    assert isinstance(repeated, LineError) and repeated.code == "duplicate_custom_id"


def test_a_row_never_streams() -> None:
    row = BatchRow(1, "a", CHAT, {"messages": [], "stream": True, "stream_options": {"include_usage": True}})
    assert json.loads(row.request_body()) == {"messages": [], "stream": False}


def test_scan_counts_rows_and_lists_the_first_errors() -> None:
    lines = [line(custom_id="a"), b"\n", b"nope", line(custom_id="a"), line(custom_id="b"), b"[]"]
    found = scan(lines, CHAT, max_listed=2)
    assert (found.total, found.valid) == (5, 2)
    assert [(e.code, e.line) for e in found.errors] == [("invalid_json_line", 3), ("duplicate_custom_id", 4)]


def test_output_and_error_lines_have_openais_shape() -> None:
    answered = answer_line("a", 200, "trace-1", {"choices": []})
    assert answered["id"].startswith("batch_req_") and answered["error"] is None
    assert answered["response"] == {"status_code": 200, "request_id": "trace-1", "body": {"choices": []}}
    failed = line_error_line(LineError(4, None, "invalid_json_line", "line 4 is not a JSON object"))
    assert failed["response"] is None and failed["custom_id"] is None
    assert failed["error"] == {"code": "invalid_json_line", "message": "line 4 is not a JSON object"}


def test_ids() -> None:
    assert FILE_ID.fullmatch(new_file_id()) and BATCH_ID.fullmatch(new_batch_id())
    assert new_file_id() != new_file_id()


def body(**fields: Any) -> dict[str, Any]:
    base = {"input_file_id": new_file_id(), "endpoint": CHAT, "completion_window": "24h"}
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def test_batch_create_accepts_both_generation_endpoints() -> None:
    assert batch_create(body()).endpoint == CHAT
    assert batch_create(body(endpoint="/v1/completions", metadata={"k": "v"})).metadata == {"k": "v"}
    assert batch_create(body(output_expires_after={"anchor": "created_at", "seconds": 3600})).endpoint == CHAT


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input_file_id": None}, "input_file_id"),
        ({"input_file_id": 3}, "input_file_id"),
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"endpoint": None}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"metadata": ["k"]}, "metadata"),
    ],
)
def test_batch_create_refusals_name_the_parameter(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as err:
        batch_create(body(**fields))
    assert (err.value.status, err.value.param) == (400, param)


def test_list_limit() -> None:
    assert list_limit(None) == 20 and list_limit("100") == 100
    for bad in ("0", "101", "-1", "x"):
        with pytest.raises(APIError):
            list_limit(bad)


def test_the_official_client_parses_our_objects() -> None:
    batch = Batch(
        id=new_batch_id(),
        endpoint=CHAT,
        input_file_id=new_file_id(),
        completion_window="24h",
        status="failed",
        created_at=1,
        failed_at=2,
        errors=BatchErrors(data=[]),
    )
    parsed = openai.types.Batch.model_validate(batch.model_dump(mode="json"))
    assert parsed.status == "failed" and parsed.request_counts is not None and parsed.errors is not None
    file = FileObject(id=new_file_id(), bytes=3, created_at=1, filename="a.jsonl", purpose="batch_output")
    assert openai.types.FileObject.model_validate(file.model_dump(mode="json")).purpose == "batch_output"
