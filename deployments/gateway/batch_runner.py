"""Running a batch: every input line answered by the gateway's own generation pipeline, as its owner.

Each row becomes a synthetic HTTP request (`synthetic_request`: the ASGI scope the middleware would have
left, with the owner's verified identity and a trace id of its own) and walks `pipeline.py` like an online
request: grants (a knowledge base the owner may not read is that row's 404), retrieval, the question
cache, token charging and the audit line all apply. Before it runs, a row is counted against the owner's
quota as the Authenticate middleware counts a request: over a per-minute limit it waits for the next
window, past the daily budget it fails with 429. A key's record is read again every second: a revoked
or expired key stops its batches (`failed`), a changed grant or limit applies to the next row.

Rows run `gateway.batch_max_in_flight` at a time over all the replica's batches (Serve has no request
priorities: this bound is what leaves the LLM replicas' queues to online requests). The input file is
read line by line, twice: once in a thread to validate and count it (`validating`), then to run it; an
answer is appended to the output file (or, status >= 400, the error file) as it comes, in the order rows
finish. The work is an asyncio task on the replica that took `POST /v1/batches`, as upload jobs are.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fastapi import Request

from deployments.config import GatewaySettings, Limits
from deployments.gateway.audit import AuditLog
from deployments.gateway.auth.identity import Identity
from deployments.gateway.auth.keys import KeyStore
from deployments.gateway.auth.permissions import AccessDenied
from deployments.gateway.auth.quotas import Quotas
from deployments.gateway.batch_files import BatchFiles, OutputFile
from deployments.gateway.batches import BatchRecords, add_error, advance
from deployments.gateway.context import RequestContext
from deployments.gateway.errors import error_response, record_security_event
from deployments.gateway.middleware import trace_id_var, user_of
from deployments.gateway.pipeline import Pipeline
from deployments.gateway.protocol import APIError
from deployments.gateway.protocol.batches import (
    RUNNING,
    Batch,
    BatchErrors,
    BatchRow,
    LineError,
    answer_line,
    check_line,
    line_error_line,
    scan,
)
from deployments.gateway.redis_state import RedisUnavailable

log = logging.getLogger("raychat.gateway")
PROGRESS_EVERY_S = 1.0
_ENDPOINT_KINDS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
_DAILY_BUDGET = "Daily token budget used up. It renews at 00:00 UTC."
_KEY_GONE = "the API key that created this batch was revoked or has expired; rows not yet started did not run"


def synthetic_request(path: str, body: bytes, identity: Identity, trace_id: str) -> Request:
    """The request one row stands for, as the pipeline would receive it from the middleware: POST to the
    row's url, a JSON body read once, the verified identity and a trace id in `state`."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": None,
        "server": None,
        "state": {"identity": identity, "trace_id": trace_id},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


@dataclass
class _Job:
    batch: Batch
    owner: str
    identity: Identity
    output: OutputFile
    errors: OutputFile
    stop: str | None = None  # "cancelled", "expired" or "revoked": no new row starts
    dirty: bool = True
    saved: float = 0.0
    rows: set[asyncio.Task[None]] = field(default_factory=set)


class BatchRunner:
    def __init__(
        self,
        records: BatchRecords,
        files: BatchFiles,
        pipeline: Pipeline,
        audit: AuditLog,
        quotas: Quotas,
        keys: KeyStore,
        default_limits: Limits,
        settings: GatewaySettings,
    ) -> None:
        self.records = records
        self.files = files
        self.pipeline = pipeline
        self.audit = audit
        self.quotas = quotas
        self.keys = keys
        self.default_limits = default_limits
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.batch_max_in_flight)  # shared by all of this replica's
        self._running: set[asyncio.Task[None]] = set()  # referenced, so no task is garbage-collected

    def start(self, batch: Batch, identity: Identity) -> None:
        job = _Job(
            batch,
            identity.hashed,
            identity,
            self.files.sink(identity.hashed, f"{batch.id}_output.jsonl"),
            self.files.sink(identity.hashed, f"{batch.id}_error.jsonl"),
        )
        # A context of its own: the route's would carry Serve's request id into every row's engine call,
        # and streamed calls that share one id get each other's answers (only the first row returned).
        task = asyncio.create_task(self._run(job), context=contextvars.Context())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    # --- the batch -------------------------------------------------------------------------------------
    async def _run(self, job: _Job) -> None:
        ticker = asyncio.create_task(self._tick(job))
        batch = job.batch
        try:
            # Opened once: a DELETE of the input file while the batch runs does not cut it short.
            with self.files.path(batch.input_file_id).open("rb") as source:
                if await self._validate(job, source):
                    await self._rows(job, source)
                    await self._finish(job)
        except FileNotFoundError:
            add_error(batch, "file_not_found", f"the input file {batch.input_file_id} was deleted")
            advance(batch, "failed", time.time())
        except Exception:
            log.exception("batch %s failed", batch.id)
            add_error(batch, "internal_error", "the batch stopped on an internal error; see the gateway log")
            if batch.status in RUNNING:
                advance(batch, "failed", time.time())
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            for sink in (job.output, job.errors):
                await sink.close()
            batch.output_file_id = job.output.id if job.output.created else None
            batch.error_file_id = job.errors.id if job.errors.created else None
            await self._save(job)

    async def _validate(self, job: _Job, source: BinaryIO) -> bool:
        """Counts the rows and lists the bad lines (in a thread: a large file is not parsed on the event
        loop); a file with no row to run fails the batch."""
        batch = job.batch
        found = await asyncio.to_thread(scan, source, batch.endpoint, self.settings.batch_max_listed_errors)
        batch.request_counts.total = found.total
        if found.errors:
            batch.errors = BatchErrors(data=found.errors)
        if found.valid == 0:
            batch.request_counts.failed = found.total
            add_error(batch, "no_valid_requests", "no line of the input file is a request to run")
            advance(batch, "failed", time.time())
            return False
        await self._poll(job)
        if job.stop == "cancelled":
            advance(batch, "cancelled", time.time())
            return False
        advance(batch, "in_progress", time.time())
        job.dirty = True
        return True

    async def _rows(self, job: _Job, source: BinaryIO) -> None:
        seen: set[str] = set()
        endpoint = job.batch.endpoint
        source.seek(0)
        for number, raw in enumerate(source, start=1):
            await asyncio.sleep(0)  # a long run of bad lines does not hold the event loop
            if job.stop is not None:
                break
            checked = check_line(raw, number, endpoint, seen)
            if checked is None:
                continue
            if isinstance(checked, LineError):
                await self._write(job, job.errors, line_error_line(checked), failed=True)
                continue
            await self._slots.acquire()
            if job.stop is not None:
                self._slots.release()
                break
            task = asyncio.create_task(self._row(job, checked))
            job.rows.add(task)
            task.add_done_callback(self._row_done(job))
        if job.rows:
            await asyncio.gather(*job.rows, return_exceptions=True)

    def _row_done(self, job: _Job) -> Any:
        def done(task: asyncio.Task[None]) -> None:
            job.rows.discard(task)
            self._slots.release()

        return done

    async def _finish(self, job: _Job) -> None:
        batch, now = job.batch, time.time()
        if job.stop == "cancelled":
            advance(batch, "cancelled", now)
        elif job.stop == "expired":
            advance(batch, "expired", now)
        elif job.stop == "revoked":
            add_error(batch, "invalid_api_key", _KEY_GONE)
            advance(batch, "failed", now)
        else:
            advance(batch, "finalizing", now)
            job.dirty = True
            await self._save(job)
            advance(batch, "completed", time.time())

    # --- one row ---------------------------------------------------------------------------------------
    async def _row(self, job: _Job, row: BatchRow) -> None:
        try:
            answered = await self._answer(job, row)
            if answered is None:  # stopped while it waited for the quota: never started
                return
            status, body, request_id = answered
            line = answer_line(row.custom_id, status, request_id, body)
            await self._write(job, job.output if status < 400 else job.errors, line, failed=status >= 400)
        except Exception:  # its line could not be written (a full disk): it is counted at least
            log.exception("batch %s: line %d not written", job.batch.id, row.line)
            job.batch.request_counts.failed += 1
            job.dirty = True

    async def _answer(self, job: _Job, row: BatchRow) -> tuple[int, Any, str] | None:
        """The row's status and body, as the client of an online request would get them; None when the
        batch stopped before the row started."""
        refusal = await self._admit(job)
        if job.stop is not None:
            return None
        trace_id = str(uuid.uuid4())
        token = trace_id_var.set(trace_id)  # the gateway's log lines of this row carry its trace id
        request = synthetic_request(row.url, row.request_body(), job.identity, trace_id)
        try:
            if refusal is not None:
                raise refusal
            response = await self.pipeline.run(RequestContext(_ENDPOINT_KINDS[row.url], request))
        except APIError as exc:
            if isinstance(exc, AccessDenied) or exc.status == 429:  # as the error handler and middleware log
                record_security_event(request, f"POST {row.url}", None, f"denied_{exc.status}")
            response = error_response(exc)
        except Exception:  # as the app's handler of unexpected errors answers
            log.exception("batch %s: line %d failed", job.batch.id, row.line)
            response = error_response(
                APIError(500, "internal error; see the gateway log", code="internal_error")
            )
        finally:
            trace_id_var.reset(token)
        state = request.scope["state"]
        if not state.get("audited"):  # what the middleware writes for a request no stage audited
            self.audit.record(
                trace_id=trace_id,
                user=user_of(state, request.headers),
                endpoint=row.url,
                model=None,
                tokens=0,
                sensitive=False,
            )
        # A stream never comes back (`stream` is forced off); were one to, the row fails rather than hangs.
        if not isinstance(getattr(response, "body", None), bytes | memoryview):
            response = error_response(APIError(500, "the answer was not a JSON body", code="internal_error"))
        return response.status_code, json.loads(bytes(response.body)), trace_id

    async def _admit(self, job: _Job) -> APIError | None:
        """Counts the row against the owner's quota as the middleware counts a request: over a per-minute
        limit it waits for the window to reset (a batch has no user waiting), past the daily budget the
        row is refused with 429."""
        while True:
            decision = await self.quotas.admit(job.identity)
            if decision.refused is None:
                return None
            if decision.refused == "daily_tokens":
                return APIError(429, _DAILY_BUDGET, code="rate_limit_exceeded", type="tokens")
            await asyncio.sleep(max(decision.retry_after_s, 1))
            if job.stop is not None:
                return None

    async def _write(self, job: _Job, sink: OutputFile, line: dict[str, Any], *, failed: bool) -> None:
        await sink.write(line)
        # Named as soon as it exists: a batch whose replica goes away still points at what it wrote.
        setattr(job.batch, "output_file_id" if sink is job.output else "error_file_id", sink.id)
        counts = job.batch.request_counts
        if failed:
            counts.failed += 1
        else:
            counts.completed += 1
        job.dirty = True

    # --- the record: progress, heartbeat, cancel, the key ----------------------------------------------
    async def _tick(self, job: _Job) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            await self._poll(job)
            if job.dirty or time.monotonic() - job.saved >= self.settings.batch_stale_s / 3:
                await self._save(job)

    async def _poll(self, job: _Job) -> None:
        """Sees a cancel, the batch's expiry and the key's revocation; none of them is missed for long."""
        batch = job.batch
        if job.stop is not None:
            return
        if time.time() > (batch.expires_at or float("inf")):
            job.stop = "expired"
            return
        try:
            cancel_at = await self.records.cancel_asked(batch.id)
            identity = await self._current_identity(job.identity)
        except RedisUnavailable:
            return  # asked again in a second
        if identity is None:
            job.stop = "revoked"
        elif cancel_at is not None:
            job.stop = "cancelled"
            if batch.status == "in_progress" or batch.status == "validating":
                advance(batch, "cancelling", time.time())
                batch.cancelling_at = int(cancel_at)
                job.dirty = True
        else:
            job.identity = identity

    async def _current_identity(self, identity: Identity) -> Identity | None:
        """A key's identity as its record now says (grants and limits may have changed); None once it is
        revoked, expired or gone. A JWT's identity stays as it was verified when the batch was created."""
        if identity.kind != "key":
            return identity
        record = await self.keys.get(identity.subject)
        if record is None or not record.active(time.time()):
            return None
        return record.identity(self.default_limits)

    async def _save(self, job: _Job) -> None:
        job.dirty = False
        job.saved = time.monotonic()
        try:
            await self.records.save(job.owner, job.batch)
        except RedisUnavailable:
            job.dirty = True
            log.warning("batch %s: progress not saved (Redis unavailable)", job.batch.id)
