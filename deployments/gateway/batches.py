"""Batches of the Batch API (`/v1/batches`): their records in Redis, and what the routes ask of them.

A batch's record (OpenAI's Batch object and its owner) is in Redis for `gateway.batch_ttl_s`, so any
gateway replica answers `GET /v1/batches/{id}`; only the replica that took `POST /v1/batches` runs it
(`batch_runner.py`) and writes the record, at most once a second and at least every third of
`gateway.batch_stale_s`. A running batch whose record has not changed for `gateway.batch_stale_s` reads
`failed` ("the gateway replica running it went away; resubmit"): its replica stopped (a redeploy, an
upgrade's drained colour, a crash), and nothing resumes it; what it wrote stays in its files.

A cancel is a flag of its own beside the record (the runner is the record's only writer, so no update of
its counts can undo it): the batch reads `cancelling` at once, the runner starts no new row once it has
seen the flag, lets the rows in flight finish, and ends `cancelled`.

Only the identity that created a batch sees it; for any other, admins included, it does not exist.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from deployments.gateway.auth.identity import Identity
from deployments.gateway.batch_files import BatchFiles, unavailable
from deployments.gateway.protocol import APIError, bad_request
from deployments.gateway.protocol.batches import (
    BATCH_ID,
    COMPLETION_WINDOWS,
    RUNNING,
    Batch,
    BatchCreate,
    BatchError,
    BatchErrors,
    BatchList,
    Status,
    new_batch_id,
)
from deployments.gateway.redis_state import RedisState, RedisUnavailable

REPLICA_LOST = "the gateway replica running it went away; resubmit"
# Which status may follow which; the runner's every change goes through `advance`.
NEXT: dict[str, frozenset[str]] = {
    "validating": frozenset({"in_progress", "failed", "cancelling", "cancelled"}),
    "in_progress": frozenset({"finalizing", "cancelling", "failed", "expired"}),
    "cancelling": frozenset({"cancelled", "failed"}),
    "finalizing": frozenset({"completed", "failed"}),
}


def advance(batch: Batch, status: Status, now: float) -> None:
    """Moves the batch on, stamping `<status>_at`; a move the Batch API has not is a bug."""
    assert status in NEXT.get(batch.status, frozenset()), f"{batch.status} -> {status}"
    batch.status = status
    setattr(batch, f"{status}_at", int(now))


def add_error(batch: Batch, code: str, message: str) -> None:
    errors = batch.errors or BatchErrors()
    errors.data.append(BatchError(code=code, message=message))
    batch.errors = errors


def present(batch: Batch, updated_at: float, cancel_at: float | None, now: float, stale_s: float) -> Batch:
    """The batch as a client sees it: `failed` when its runner went silent, `cancelling` once a cancel
    was asked and the runner has not yet ended it."""
    if batch.status not in RUNNING:
        return batch
    shown = batch.model_copy(deep=True)
    if now - updated_at > stale_s:
        shown.status = "failed"
        shown.failed_at = int(updated_at + stale_s)
        add_error(shown, "replica_lost", REPLICA_LOST)
    elif cancel_at is not None and shown.status != "cancelling":
        shown.status = "cancelling"
        shown.cancelling_at = int(cancel_at)
    return shown


def _not_found(batch_id: str) -> APIError:
    return APIError(404, f"No such batch: {batch_id[:80]}", param="batch_id", code="batch_not_found")


class BatchRecords:
    """The records in Redis: one per batch, an index per owner (newest first), a cancel flag per batch."""

    def __init__(self, redis: RedisState, ttl_s: float) -> None:
        self.redis = redis
        self.ttl_s = int(ttl_s)

    def _key(self, batch_id: str) -> str:
        return self.redis.key("batch", batch_id)

    def _cancel_key(self, batch_id: str) -> str:
        return self.redis.key("batch_cancel", batch_id)

    def _index(self, owner: str) -> str:
        return self.redis.key("batches", owner)

    async def save(self, owner: str, batch: Batch, *, new: bool = False) -> None:
        record = json.dumps(
            {"owner": owner, "updated_at": time.time(), "batch": batch.model_dump(mode="json")}
        )
        key, index = self._key(batch.id), self._index(owner)

        async def write(client: Any) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(key, record, ex=self.ttl_s)
                if new:
                    pipe.zadd(index, {batch.id: time.time()})
                    pipe.expire(index, self.ttl_s)
                await pipe.execute()

        await self.redis.run(write)

    async def load(self, batch_ids: list[str]) -> list[tuple[dict[str, Any], float | None] | None]:
        """Each batch's record and its cancel flag (the time it was asked), None for a missing one."""
        if not batch_ids:
            return []
        keys = [self._key(i) for i in batch_ids] + [self._cancel_key(i) for i in batch_ids]
        raws = await self.redis.run(lambda r: r.mget(keys))
        records, flags = raws[: len(batch_ids)], raws[len(batch_ids) :]
        return [
            (json.loads(raw), float(flag) if flag else None) if raw else None
            for raw, flag in zip(records, flags, strict=True)
        ]

    async def ask_cancel(self, batch_id: str) -> None:
        key = self._cancel_key(batch_id)
        await self.redis.run(lambda r: r.set(key, str(time.time()), ex=self.ttl_s, nx=True))

    async def cancel_asked(self, batch_id: str) -> float | None:
        key = self._cancel_key(batch_id)
        raw = await self.redis.run(lambda r: r.get(key))
        return float(raw) if raw else None

    async def page(self, owner: str, after: str | None, count: int) -> list[str]:
        """Up to `count` of the owner's batch ids, newest first, after the id `after`."""
        index = self._index(owner)
        start = 0
        if after is not None:
            rank = await self.redis.run(lambda r: r.zrevrank(index, after))
            if rank is None:
                return []
            start = int(rank) + 1
        return list(await self.redis.run(lambda r: r.zrevrange(index, start, start + count - 1)))

    async def forget(self, owner: str, batch_ids: list[str]) -> None:
        """Index entries whose record expired."""
        index = self._index(owner)
        await self.redis.run(lambda r: r.zrem(index, *batch_ids))


class Runner(Protocol):
    def start(self, batch: Batch, identity: Identity) -> None: ...


class Batches:
    def __init__(self, records: BatchRecords, files: BatchFiles, runner: Runner, stale_s: float) -> None:
        self.records = records
        self.files = files
        self.runner = runner
        self.stale_s = stale_s

    async def create(self, request: BatchCreate, caller: Identity) -> Batch:
        """Checks the input file is the caller's batch input, saves the batch (`validating`) and starts
        it on this replica. 503 when Redis cannot keep the record: a batch nobody could follow is not run."""
        try:
            file = await self.files.get(request.input_file_id, caller.hashed)
        except APIError as exc:
            if exc.status == 404:
                exc.param = "input_file_id"
            raise
        if file.purpose != "batch":
            raise bad_request(
                f"file {file.id} is a batch's output; upload the input with purpose 'batch'", "input_file_id"
            )
        now = time.time()
        batch = Batch(
            id=new_batch_id(),
            endpoint=request.endpoint,
            input_file_id=file.id,
            completion_window=request.completion_window,
            status="validating",
            created_at=int(now),
            expires_at=int(now) + COMPLETION_WINDOWS[request.completion_window],
            metadata=request.metadata,
        )
        try:
            await self.records.save(caller.hashed, batch, new=True)
        except RedisUnavailable:
            raise unavailable("batches") from None
        self.runner.start(batch, caller)
        return batch

    async def get(self, batch_id: str, caller: Identity) -> Batch:
        if not BATCH_ID.fullmatch(batch_id):
            raise _not_found(batch_id)
        try:
            (found,) = await self.records.load([batch_id])
        except RedisUnavailable:
            raise unavailable("batches") from None
        if found is None or found[0]["owner"] != caller.hashed:
            raise _not_found(batch_id)
        return self._present(*found)

    async def list(self, caller: Identity, limit: int, after: str | None) -> BatchList:
        try:
            ids = await self.records.page(caller.hashed, after, limit + 1)
            found = await self.records.load(ids)
            gone = [i for i, f in zip(ids, found, strict=True) if f is None]
            if gone:
                await self.records.forget(caller.hashed, gone)
        except RedisUnavailable:
            raise unavailable("batches") from None
        batches = [self._present(*f) for f in found if f is not None]
        shown = batches[:limit]
        return BatchList(
            data=shown,
            first_id=shown[0].id if shown else None,
            last_id=shown[-1].id if shown else None,
            has_more=len(ids) > limit,
        )

    async def cancel(self, batch_id: str, caller: Identity) -> Batch:
        """A running batch reads `cancelling` at once (cancelling one twice is no error); a batch that
        has ended is 409."""
        batch = await self.get(batch_id, caller)
        if batch.status in ("cancelling", "cancelled"):
            return batch
        if batch.status not in RUNNING:
            raise APIError(
                409,
                f"batch {batch_id} is {batch.status}; only a running batch can be cancelled",
                param="batch_id",
                code="batch_not_cancellable",
            )
        try:
            await self.records.ask_cancel(batch_id)
        except RedisUnavailable:
            raise unavailable("batches") from None
        return await self.get(batch_id, caller)

    def _present(self, record: dict[str, Any], cancel_at: float | None) -> Batch:
        batch = Batch.model_validate(record["batch"])
        return present(batch, float(record["updated_at"]), cancel_at, time.time(), self.stale_s)
