"""Uploads that answer at once and ingest in the background (`POST .../documents?wait=false`).

The job's record is in Redis, so any gateway replica answers `GET /v1/knowledge_bases/{name}/jobs/{id}`;
it is updated as the ingestion pipeline counts (at most once a second) and when it ends. The work is an
asyncio task on the replica that took the upload: parsing, embedding and writing happen in other
deployments and Ray tasks, so the replica only waits. A running job whose record has not changed for
`gateway.ingestion_job_stale_s` reads `lost` (its replica went away); what it wrote stays written.
Only the identity that started a job sees it (admins see every one); another caller gets 404.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from typing import Any

from deployments.gateway.auth.identity import Identity
from deployments.gateway.protocol import APIError, IngestionJob
from deployments.gateway.redis_state import RedisState, RedisUnavailable
from deployments.ingestion import Progress
from deployments.knowledge_api import KnowledgeAPI

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0
JOB_ID = re.compile(r"ingest-[0-9a-f]{16}")


class IngestionJobs:
    def __init__(self, redis: RedisState, knowledge: KnowledgeAPI, ttl_s: float, stale_s: float) -> None:
        self.redis = redis
        self.knowledge = knowledge
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self._running: set[asyncio.Task[None]] = set()  # referenced, so no task is garbage-collected

    def _key(self, kb: str, job_id: str) -> str:
        return self.redis.key("ingestion_job", kb, job_id)

    async def _save(self, owner: str, job: IngestionJob) -> None:
        record = json.dumps({"owner": owner, "job": job.model_dump(mode="json")})
        key = self._key(job.knowledge_base, job.id)
        await self.redis.run(lambda r: r.set(key, record, ex=int(self.ttl_s)))

    async def start(self, kb: str, files: list[tuple[str, bytes]], caller: Identity) -> IngestionJob:
        """Checks the files as a waited upload does (a bad request is refused now, not in the job), saves
        the job, starts it. 503 when Redis cannot keep the record: a job nobody could follow is not run."""
        named = self.knowledge.check_files(files)
        await self.knowledge.store("get_kb", kb)
        now = time.time()
        job = IngestionJob(
            id=f"ingest-{secrets.token_hex(8)}",
            knowledge_base=kb,
            status="running",
            files=len(named),
            created_at=now,
            updated_at=now,
        )
        try:
            await self._save(caller.hashed, job)
        except RedisUnavailable:
            raise APIError(
                503,
                "upload jobs are unavailable while the session store is down; upload with wait=true",
                code="session_store_unavailable",
                headers={"Retry-After": "5"},
            ) from None
        task = asyncio.create_task(self._run(job, named, caller.hashed))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return job

    async def _run(self, job: IngestionJob, files: list[tuple[str, bytes]], owner: str) -> None:
        saved = [0.0]
        pending: list[asyncio.Task[None]] = []

        def progress(p: Progress) -> None:
            now = time.monotonic()
            if now - saved[0] < PROGRESS_EVERY_S:
                return
            saved[0] = now
            counts = p.as_dict()
            update = {
                k: counts[k] for k in ("done", "ingested", "unchanged", "failed", "chunks", "chunks_per_s")
            }
            pending.append(asyncio.ensure_future(self._update(job, owner, update)))

        # A single large file can keep the counts still for minutes: the record is touched meanwhile, so
        # only a job whose replica is gone reads `lost`.
        beat = asyncio.create_task(self._heartbeat(job, owner))
        try:
            results = await self.knowledge.upload(job.knowledge_base, files, on_progress=progress)
            summary = Progress(files=len(results))
            for result in results:
                summary.count(result)
            counts = summary.as_dict()
            final = {k: counts[k] for k in ("done", "ingested", "unchanged", "failed", "chunks")}
            final |= {"status": "completed", "results": results}
        except Exception as exc:  # an APIError from the store, or anything else: the job says so
            log.exception("ingestion job %s failed", job.id)
            final = {"status": "failed", "error": getattr(exc, "message", None) or type(exc).__name__}
        beat.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        elapsed = max(time.time() - job.created_at, 1e-6)
        final |= {"finished_at": time.time(), "chunks_per_s": round(int(final.get("chunks", 0)) / elapsed, 1)}
        await self._update(job, owner, final)

    async def _heartbeat(self, job: IngestionJob, owner: str) -> None:
        while True:
            await asyncio.sleep(self.stale_s / 3)
            await self._update(job, owner, {})

    async def _update(self, job: IngestionJob, owner: str, changes: dict[str, Any]) -> None:
        for key, value in {**changes, "updated_at": time.time()}.items():
            setattr(job, key, value)
        try:
            await self._save(owner, job)
        except RedisUnavailable:
            log.warning("ingestion job %s: progress not saved (Redis unavailable)", job.id)

    async def get(self, kb: str, job_id: str, caller: Identity) -> IngestionJob:
        if not JOB_ID.fullmatch(job_id):
            raise APIError(
                404, f"no upload job {job_id[:80]!r} in knowledge base {kb!r}", code="job_not_found"
            )
        key = self._key(kb, job_id)
        try:
            raw = await self.redis.run(lambda r: r.get(key))
        except RedisUnavailable:
            raise APIError(
                503,
                "upload jobs are unavailable while the session store is down",
                code="session_store_unavailable",
            ) from None
        record = json.loads(raw) if raw else None
        if record is None or (record["owner"] != caller.hashed and not caller.is_admin):
            raise APIError(404, f"no upload job {job_id!r} in knowledge base {kb!r}", code="job_not_found")
        job = IngestionJob.model_validate(record["job"])
        if job.status == "running" and time.time() - job.updated_at > self.stale_s:
            job.status = "lost"
        return job
