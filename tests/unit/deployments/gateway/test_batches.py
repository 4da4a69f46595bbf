"""A batch's status moves as the Batch API's do; a silent runner and a cancel show as they should; an
upload is counted and checked as it is copied; a row's request looks like the middleware's."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from deployments.config import GatewaySettings
from deployments.gateway.auth.identity import anonymous_admin
from deployments.gateway.auth.permissions import identity_of
from deployments.gateway.batch_files import BatchFiles, _LineCounter
from deployments.gateway.batch_runner import synthetic_request
from deployments.gateway.batches import REPLICA_LOST, add_error, advance, present
from deployments.gateway.protocol import APIError
from deployments.gateway.protocol.batches import Batch


def batch(status: str = "validating") -> Batch:
    return Batch(
        id="batch_" + "0" * 24,
        endpoint="/v1/chat/completions",
        input_file_id="file-" + "0" * 24,
        completion_window="24h",
        status=status,  # type: ignore[arg-type]
        created_at=100,
    )


def test_the_happy_path_stamps_each_step() -> None:
    b = batch()
    for status, at in (("in_progress", 101), ("finalizing", 102), ("completed", 103)):
        advance(b, status, at)  # type: ignore[arg-type]
    assert (b.in_progress_at, b.finalizing_at, b.completed_at, b.status) == (101, 102, 103, "completed")


@pytest.mark.parametrize(
    "path",
    [
        ["failed"],
        ["cancelling", "cancelled"],
        ["cancelled"],
        ["in_progress", "cancelling", "cancelled"],
        ["in_progress", "expired"],
        ["in_progress", "failed"],
    ],
)
def test_other_ways_a_batch_ends(path: list[str]) -> None:
    b = batch()
    for status in path:
        advance(b, status, 200)  # type: ignore[arg-type]
    assert getattr(b, f"{path[-1]}_at") == 200


@pytest.mark.parametrize(
    ("start", "to"),
    [
        ("completed", "in_progress"),
        ("validating", "completed"),
        ("cancelled", "in_progress"),
        ("failed", "failed"),
    ],
)
def test_moves_the_api_has_not_are_refused(start: str, to: str) -> None:
    with pytest.raises(AssertionError):
        advance(batch(start), to, 1)  # type: ignore[arg-type]


def test_a_silent_runner_reads_failed() -> None:
    b = batch("in_progress")
    shown = present(b, updated_at=1000, cancel_at=None, now=1061, stale_s=60)
    assert shown.status == "failed" and shown.failed_at == 1060
    assert shown.errors is not None and shown.errors.data[-1].message == REPLICA_LOST
    assert b.status == "in_progress"  # the record itself is not changed
    assert present(b, updated_at=1000, cancel_at=None, now=1059, stale_s=60).status == "in_progress"


def test_a_cancel_reads_cancelling_until_the_runner_ends_it() -> None:
    shown = present(batch("in_progress"), updated_at=1000, cancel_at=1001.5, now=1002, stale_s=60)
    assert (shown.status, shown.cancelling_at) == ("cancelling", 1001)
    ended = batch("in_progress")
    advance(ended, "finalizing", 1)
    advance(ended, "completed", 2)
    assert present(ended, updated_at=0, cancel_at=1.0, now=10_000, stale_s=60).status == "completed"


def test_errors_accumulate() -> None:
    b = batch()
    add_error(b, "a", "first")
    add_error(b, "b", "second")
    assert b.errors is not None and [e.code for e in b.errors.data] == ["a", "b"]


# --- uploads --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_rows_are_counted_across_chunks_of_any_size(size: int) -> None:
    data = b'{"a": 1}\n\n  \n{"b": 2}\r\n{"c": 3}'
    counter = _LineCounter()
    for i in range(0, len(data), size):
        counter.feed(data[i : i + size])
    counter.finish()
    assert (counter.rows, counter.bytes) == (3, len(data))


def test_utf8_split_between_chunks_is_fine_and_broken_utf8_is_400() -> None:
    text = '{"q": "你好"}\n'.encode()
    counter = _LineCounter()
    counter.feed(text[:8])
    counter.feed(text[8:])
    counter.finish()
    assert counter.rows == 1
    with pytest.raises(APIError) as err:
        _LineCounter().feed(b"\xff{}\n")
    assert (err.value.status, err.value.param) == (400, "file")
    cut = _LineCounter()
    cut.feed("你".encode()[:2])
    with pytest.raises(APIError):
        cut.finish()


def files(tmp_path: Path, **settings: int) -> BatchFiles:
    return BatchFiles(None, tmp_path / "files", GatewaySettings(**settings))  # type: ignore[arg-type]


def test_an_upload_is_stored_private(tmp_path: Path) -> None:
    store = files(tmp_path)
    size = store._store(io.BytesIO(b'{"custom_id": "a"}\n'), "file-" + "1" * 24)
    path = store.path("file-" + "1" * 24)
    assert size == 19 and path.read_bytes() == b'{"custom_id": "a"}\n'
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"{}\n" * 4, 400), (b"x" * 2000, 413), (b"\n \n", 400), (b"\xff\n", 400)],
)
def test_a_refused_upload_leaves_nothing(tmp_path: Path, data: bytes, status: int) -> None:
    store = files(tmp_path, batch_max_file_bytes=1024, batch_max_rows=3)
    with pytest.raises(APIError) as err:
        store._store(io.BytesIO(data), "file-" + "2" * 24)
    assert err.value.status == status
    assert list(store.root.iterdir()) == []


# --- a row's request ---------------------------------------------------------------------------------------
def test_a_rows_request_is_what_the_middleware_leaves() -> None:
    identity = anonymous_admin()
    request = synthetic_request("/v1/chat/completions", b'{"messages": []}', identity, "trace-1")

    async def read() -> tuple[bytes, bytes]:
        return await request.body(), b"".join([c async for c in request.stream()])

    assert request.method == "POST" and request.url.path == "/v1/chat/completions"
    assert request.headers["content-type"] == "application/json"
    assert identity_of(request.scope["state"]) is identity and request.state.trace_id == "trace-1"
    body, _ = asyncio.run(read())
    assert body == b'{"messages": []}'
