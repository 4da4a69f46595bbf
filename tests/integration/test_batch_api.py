"""The OpenAI Batch API on the real stack, through Nginx, with the official `openai` client unchanged:
upload, create, follow, read the output and error files; files and batches scoped to their key; grants
per row; cancel of a running batch. Rows are tiny (max_tokens a few) so the file stays quick."""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.conftest import Stack
from tests.integration.identity_helpers import make_key

MODEL = "smollm2-135m-instruct"
ENDPOINT = "/v1/chat/completions"
POLL_S, BOUND_S = 1.0, 300.0
PUMP = "The P-200 pump must be lubricated every 40 operating hours with ISO VG 68 oil."


def client_for(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=120)


def row(custom_id: str, text: str, max_tokens: int = 6, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            **body,
        },
    }


def upload(client: openai.OpenAI, rows: list[dict[str, Any]]) -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    created = client.files.create(file=("rows.jsonl", io.BytesIO(data)), purpose="batch")
    assert created.purpose == "batch" and created.bytes == len(data) and created.id.startswith("file-")
    return created.id


def start(client: openai.OpenAI, rows: list[dict[str, Any]]) -> Any:
    batch = client.batches.create(
        input_file_id=upload(client, rows), endpoint=ENDPOINT, completion_window="24h"
    )
    assert batch.status == "validating" and batch.id.startswith("batch_")
    return batch


def finished(client: openai.OpenAI, batch_id: str) -> Any:
    deadline = time.monotonic() + BOUND_S
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, f"not finished after {BOUND_S:.0f} s: {batch}"
        time.sleep(POLL_S)


def lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id is not None
    text = client.files.content(file_id).text
    return {record["custom_id"]: record for record in map(json.loads, text.splitlines())}


@dataclass(frozen=True)
class Done:
    client: openai.OpenAI
    batch: Any


@pytest.fixture(scope="module")
def done(stack: Stack) -> Done:
    """Three good chats and one with an empty `messages`, by a plain user key, run to the end."""
    client = client_for(stack, make_key(stack, "user", []).key)
    rows = [
        row("hello", "Say hello."),
        row("fruit", "Name a fruit."),
        row("colour", "Name a colour."),
        row("empty", "unused", messages=[]),
    ]
    return Done(client, finished(client, start(client, rows).id))


def test_a_batch_runs_to_completed(done: Done) -> None:
    batch = done.batch
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        4,
        3,
        1,
    )
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at and batch.expires_at
    answered = lines(done.client, batch.output_file_id)
    assert set(answered) == {"hello", "fruit", "colour"}
    for record in answered.values():
        assert record["error"] is None and record["id"].startswith("batch_req_")
        response = record["response"]
        assert response["status_code"] == 200 and response["request_id"]
        assert response["body"]["choices"][0]["message"]["content"]
        assert response["body"]["usage"]["completion_tokens"] > 0
    failed = lines(done.client, batch.error_file_id)
    assert set(failed) == {"empty"}
    response = failed["empty"]["response"]
    assert response["status_code"] == 400 and response["body"]["error"]["param"] == "messages"
    assert done.batch.id in [b.id for b in done.client.batches.list().data]
    output = done.client.files.retrieve(batch.output_file_id)
    assert output.purpose == "batch_output" and output.bytes > 0


def test_another_key_sees_neither_batch_nor_files(stack: Stack, done: Done) -> None:
    other = client_for(stack, make_key(stack, "user", []).key)
    batch = done.batch
    for attempt in (
        lambda: other.batches.retrieve(batch.id),
        lambda: other.batches.cancel(batch.id),
        lambda: other.files.retrieve(batch.input_file_id),
        lambda: other.files.content(batch.input_file_id),
        lambda: other.files.content(batch.output_file_id),
        lambda: other.files.delete(batch.input_file_id),
        lambda: other.batches.create(
            input_file_id=batch.input_file_id, endpoint=ENDPOINT, completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert batch.id not in [b.id for b in other.batches.list().data]
    assert done.client.files.retrieve(batch.input_file_id).id == batch.input_file_id  # still there


def test_each_row_is_held_to_the_keys_grants(stack: Stack) -> None:
    granted, other = f"batch-kb-{uuid.uuid4().hex[:6]}", f"batch-other-{uuid.uuid4().hex[:6]}"
    for name in (granted, other):
        created = stack.http.post(f"{stack.url}/v1/knowledge_bases", json={"name": name}, timeout=60)
        assert created.status_code == 201, created.text
    uploaded = stack.http.post(
        f"{stack.url}/v1/knowledge_bases/{granted}/documents",
        files=[("files", ("pump.txt", PUMP.encode(), "text/plain"))],
        timeout=300,
    )
    assert uploaded.status_code == 200, uploaded.text
    client = client_for(stack, make_key(stack, "user", [granted]).key)
    rows = [
        row("mine", "How often is the pump lubricated?", knowledge_base=granted, cache=False),
        row("theirs", "How often is the pump lubricated?", knowledge_base=other, cache=False),
    ]
    batch = finished(client, start(client, rows).id)
    assert batch.status == "completed", batch
    answered = lines(client, batch.output_file_id)["mine"]["response"]
    assert answered["status_code"] == 200 and answered["body"]["sources"][0]["document"] == "pump.txt"
    refused = lines(client, batch.error_file_id)["theirs"]["response"]
    assert refused["status_code"] == 404
    assert refused["body"]["error"]["code"] == "knowledge_base_not_found" and PUMP not in json.dumps(refused)


def test_cancel_of_a_running_batch(stack: Stack) -> None:
    client = client_for(stack, make_key(stack, "user", []).key)
    rows = [row(f"r{i}", f"Count to ten, then say {i}.", max_tokens=24) for i in range(40)]
    batch = start(client, rows)
    deadline = time.monotonic() + BOUND_S
    while True:  # running, with some rows done: a cancel in the middle
        seen = client.batches.retrieve(batch.id)
        counts = seen.request_counts
        if seen.status == "in_progress" and counts is not None and counts.completed >= 1:
            break
        assert seen.status in ("validating", "in_progress") and time.monotonic() < deadline, seen
        time.sleep(0.2)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    ended = finished(client, batch.id)
    assert ended.status == "cancelled" and ended.cancelled_at, ended
    counts = ended.request_counts
    assert counts is not None and 1 <= counts.completed and counts.completed + counts.failed < 40
    assert len(lines(client, ended.output_file_id)) == counts.completed  # what was written is kept
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(finished(client, start(client, rows[:1]).id).id)
