"""The OpenAI Batch API's shapes: File and Batch objects, `POST /v1/batches`'s body, the input file's
lines and the output and error files' lines.

Ray-free and FastAPI-free like the rest of the protocol: the gateway's files and batches services use it,
and a batch job could read the same lines. An input line is `{"custom_id", "method": "POST", "url",
"body"}`; a line that is not one (not JSON, no custom_id, another method or url, a custom_id seen before)
fails on its own, as a line of the error file with `response: null` and `error: {code, message}`, and
the other lines still run.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from deployments.gateway.protocol.errors import APIError, bad_request
from deployments.gateway.protocol.values import parse_json_object

# --- ids and OpenAI's documented bounds ---------------------------------------------------------------
FILE_ID = re.compile(r"file-[0-9a-f]{24}")
BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
COMPLETION_WINDOWS = {"24h": 24 * 3600}
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
LIST_DEFAULT, LIST_MAX = 20, 100  # `GET /v1/batches?limit=`
FILENAME_CHARS = 255

Status = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
RUNNING: frozenset[str] = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def new_request_id() -> str:
    return f"batch_req_{secrets.token_hex(12)}"


# --- objects ------------------------------------------------------------------------------------------
class FileObject(BaseModel):
    """OpenAI's File object. `purpose` is `batch` for an upload, `batch_output` for what a batch wrote."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchRequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class Batch(BaseModel):
    """OpenAI's Batch object, as `client.batches.retrieve` parses it."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: Status
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    errors: BatchErrors | None = None
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class BatchCreate(BaseModel):
    """`POST /v1/batches`: the JSONL file (uploaded with purpose `batch`) and the endpoint of its lines."""

    input_file_id: str
    endpoint: Literal["/v1/chat/completions", "/v1/completions"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None


# --- POST /v1/batches ----------------------------------------------------------------------------------
def batch_create(body: Mapping[str, Any]) -> BatchCreate:
    """The body as a BatchCreate, each problem a 400 naming its parameter. Other fields (OpenAI's
    `output_expires_after`) are accepted and ignored."""
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise bad_request("'input_file_id' must be a file id", "input_file_id", "missing_required_parameter")
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise bad_request(
            f"'endpoint' must be one of {', '.join(ENDPOINTS)}, got {json.dumps(endpoint)[:80]}",
            "endpoint",
            "unsupported_endpoint",
        )
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise bad_request(
            f"'completion_window' must be one of {', '.join(COMPLETION_WINDOWS)}", "completion_window"
        )
    metadata = body.get("metadata")
    check_metadata(metadata)
    return BatchCreate(input_file_id=file_id, endpoint=endpoint, completion_window=window, metadata=metadata)


def check_metadata(metadata: Any) -> None:
    """OpenAI's rule: at most 16 string pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > METADATA_PAIRS:
        raise bad_request(f"'metadata' must be an object of at most {METADATA_PAIRS} pairs", "metadata")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS or not isinstance(value, str) or len(value) > METADATA_VALUE_CHARS:
            raise bad_request(
                f"'metadata' keys are strings of up to {METADATA_KEY_CHARS} characters, values strings of "
                f"up to {METADATA_VALUE_CHARS}",
                "metadata",
            )


def list_limit(value: str | None) -> int:
    if value is None:
        return LIST_DEFAULT
    if not value.isdigit() or not 1 <= int(value) <= LIST_MAX:
        raise bad_request(f"'limit' must be an integer in [1, {LIST_MAX}]", "limit")
    return int(value)


# --- input lines ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchRow:
    line: int  # 1-based, as `errors[].line` counts
    custom_id: str
    url: str
    body: dict[str, Any]

    def request_body(self) -> bytes:
        """The body the pipeline parses: never a stream (a batch answer is one JSON body)."""
        body = {k: v for k, v in self.body.items() if k != "stream_options"}
        return json.dumps({**body, "stream": False}, ensure_ascii=False).encode()


@dataclass(frozen=True)
class LineError:
    line: int
    custom_id: str | None
    code: str
    message: str

    def listed(self) -> BatchError:
        return BatchError(code=self.code, message=self.message, line=self.line)


def check_line(raw: bytes, line: int, endpoint: str, seen: set[str]) -> BatchRow | LineError | None:
    """One line of the input file: a row to run, a line that fails on its own, or None when blank.
    `seen` holds the custom_ids of the rows before it (a repeated one fails; the first one runs)."""
    if not raw.strip():
        return None
    try:
        obj = parse_json_object(raw)
    except APIError as exc:
        return LineError(line, None, "invalid_json_line", f"line {line} is not a JSON object: {exc.message}")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(
            line, None, "missing_custom_id", f"line {line}: 'custom_id' must be a non-empty string"
        )
    if custom_id in seen:
        return LineError(
            line, custom_id, "duplicate_custom_id", f"line {line}: custom_id repeats an earlier line"
        )
    seen.add(custom_id)
    method = obj.get("method", "POST")
    if method != "POST":
        return LineError(line, custom_id, "invalid_method", f"line {line}: 'method' must be POST")
    url = obj.get("url", endpoint)
    if url != endpoint:
        return LineError(
            line,
            custom_id,
            "mismatched_endpoint",
            f"line {line}: 'url' must be the batch's endpoint {endpoint}",
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        return LineError(line, custom_id, "invalid_body", f"line {line}: 'body' must be a JSON object")
    return BatchRow(line, custom_id, url, body)


@dataclass
class Scan:
    """What validation found in a whole input file, before any row runs."""

    total: int = 0
    valid: int = 0
    errors: list[BatchError] = field(default_factory=list)


def scan(lines: Iterable[bytes], endpoint: str, max_listed: int) -> Scan:
    """Counts the rows and lists the first `max_listed` line errors (all are in the error file)."""
    found = Scan()
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        checked = check_line(raw, number, endpoint, seen)
        if checked is None:
            continue
        found.total += 1
        if isinstance(checked, BatchRow):
            found.valid += 1
        elif len(found.errors) < max_listed:
            found.errors.append(checked.listed())
    return found


# --- output lines --------------------------------------------------------------------------------------
def answer_line(custom_id: str, status: int, request_id: str, body: Any) -> dict[str, Any]:
    """A row that reached the endpoint: in the output file when it succeeded, else in the error file."""
    return {
        "id": new_request_id(),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }


def line_error_line(error: LineError) -> dict[str, Any]:
    """A line that never became a request: in the error file."""
    return {
        "id": new_request_id(),
        "custom_id": error.custom_id,
        "response": None,
        "error": {"code": error.code, "message": error.message},
    }
