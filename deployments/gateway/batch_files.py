"""Files of the Batch API (`/v1/files`): a batch's JSONL input, and the output and error files it writes.

The bytes are under `<data_dir>/batches/files/<file-id>` on the head node, where every gateway replica runs
(`placement.services_on_head`), so any replica serves any file; the record (owner, name, size, purpose) is
in Redis for `gateway.batch_ttl_s`, like an upload job's. A file lives until `DELETE /v1/files/{id}` or
until its record expires: the next upload's sweep then removes the bytes nobody can reach any more.
Only the identity that uploaded a file (or whose batch wrote it) sees it; for any other, admins
included, it does not exist (404).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from deployments.config import GatewaySettings
from deployments.gateway.protocol import APIError, bad_request
from deployments.gateway.protocol.batches import FILE_ID, FILENAME_CHARS, FileDeleted, FileObject, new_file_id
from deployments.gateway.redis_state import RedisState, RedisUnavailable

log = logging.getLogger("raychat.gateway")
# Room for the multipart framing and the `purpose` field around the file itself.
_MULTIPART_SLACK = 64 * 1024
_COPY_CHUNK = 1024 * 1024
# Unreachable files (their record expired) are looked for at most this often, on an upload.
_SWEEP_EVERY_S = 3600.0


def _not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id[:80]}", param="file_id", code="file_not_found")


def unavailable(what: str) -> APIError:
    """Files and batches keep their records in Redis: while it is down they answer 503 with Retry-After."""
    return APIError(
        503,
        f"{what} are unavailable while the session store is down; retry shortly",
        code="session_store_unavailable",
        headers={"Retry-After": "2"},
    )


class BatchFiles:
    def __init__(self, redis: RedisState, root: Path, settings: GatewaySettings) -> None:
        self.redis = redis
        self.root = root
        self.settings = settings
        self._swept = 0.0

    def _key(self, file_id: str) -> str:
        return self.redis.key("batch_file", file_id)

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def _ensure_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    # --- records ---------------------------------------------------------------------------------------
    async def save(self, owner: str, file: FileObject, *, only_if_exists: bool = False) -> None:
        """The record, kept batch_ttl_s from now. `only_if_exists`: an update never brings back a record
        a DELETE removed meanwhile."""
        ttl = int(self.settings.batch_ttl_s)
        file.expires_at = int(time.time()) + ttl
        record = json.dumps({"owner": owner, "file": file.model_dump(mode="json")})
        key = self._key(file.id)
        await self.redis.run(lambda r: r.set(key, record, ex=ttl, xx=only_if_exists))

    async def get(self, file_id: str, owner: str) -> FileObject:
        """The caller's file; another identity's is 404 exactly as a missing one."""
        if not FILE_ID.fullmatch(file_id):
            raise _not_found(file_id)
        key = self._key(file_id)
        try:
            raw = await self.redis.run(lambda r: r.get(key))
        except RedisUnavailable:
            raise unavailable("files") from None
        record = json.loads(raw) if raw else None
        if record is None or record["owner"] != owner:
            raise _not_found(file_id)
        return FileObject.model_validate(record["file"])

    async def content(self, file_id: str, owner: str) -> Path:
        await self.get(file_id, owner)
        path = self.path(file_id)
        if not path.is_file():
            raise _not_found(file_id)
        return path

    async def delete(self, file_id: str, owner: str) -> FileDeleted:
        await self.get(file_id, owner)
        key = self._key(file_id)
        try:
            await self.redis.run(lambda r: r.delete(key))
        except RedisUnavailable:
            raise unavailable("files") from None
        self.path(file_id).unlink(missing_ok=True)
        return FileDeleted(id=file_id)

    # --- upload ----------------------------------------------------------------------------------------
    async def upload(self, request: Request, owner: str) -> FileObject:
        """`POST /v1/files`: multipart `file` and `purpose` (only `batch`). The body is counted as it
        arrives (413 past the limit, whatever Content-Length said), then copied next to the others,
        UTF-8 and at most batch_max_rows lines checked on the way."""
        limit = self.settings.batch_max_file_bytes
        declared = request.headers.get("content-length") or "0"
        if declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
            raise _too_large(limit)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad_request("expected multipart/form-data with fields 'file' and 'purpose'", "file")
        parser = MultiPartParser(
            request.headers, _bounded(request.stream(), limit), max_files=1, max_fields=16
        )
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise bad_request(f"invalid multipart body: {exc.message}", "file", "invalid_multipart") from exc
        try:
            purpose, upload = form.get("purpose"), form.get("file")
            if purpose is None:
                raise bad_request("'purpose' is required", "purpose", "missing_required_parameter")
            if purpose != "batch":
                raise bad_request("only purpose 'batch' is supported", "purpose")
            if not isinstance(upload, UploadFile):
                raise bad_request("'file' must be a file part", "file", "missing_required_parameter")
            file_id = new_file_id()
            await self.sweep()
            size = await asyncio.to_thread(self._store, upload.file, file_id)
        finally:
            await form.close()
        filename = (upload.filename or "input.jsonl")[:FILENAME_CHARS]
        file = FileObject(
            id=file_id, bytes=size, created_at=int(time.time()), filename=filename, purpose="batch"
        )
        try:
            await self.save(owner, file)
        except RedisUnavailable:
            self.path(file_id).unlink(missing_ok=True)
            raise unavailable("files") from None
        return file

    def _store(self, source: IO[bytes], file_id: str) -> int:
        """Copies the upload into place (0600), refusing it on the way: over the size limit, not UTF-8,
        no line at all or more than batch_max_rows. Runs in a thread: a large file is not copied on the
        event loop."""
        self._ensure_root()
        partial = self.root / f"{file_id}.part"
        checker = _LineCounter()
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_COPY_CHUNK):
                    checker.feed(chunk)
                    if checker.bytes > self.settings.batch_max_file_bytes:
                        raise _too_large(self.settings.batch_max_file_bytes)
                    if checker.rows > self.settings.batch_max_rows:
                        raise bad_request(
                            f"the file holds more than {self.settings.batch_max_rows} requests", "file"
                        )
                    out.write(chunk)
            checker.finish()
            if checker.rows == 0:
                raise bad_request("the file holds no request (one JSON object per line)", "file")
            os.replace(partial, self.path(file_id))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return checker.bytes

    async def sweep(self) -> None:
        """Removes the bytes of files whose record has expired (and uploads cut short), at most once in
        _SWEEP_EVERY_S per replica. A file with a record is never touched."""
        now = time.monotonic()
        if now - self._swept < _SWEEP_EVERY_S or not self.root.is_dir():
            return
        self._swept = now
        cutoff = time.time() - self.settings.batch_ttl_s
        old = await asyncio.to_thread(
            lambda: [p for p in self.root.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]
        )
        for path in old:
            file_id = path.name.removesuffix(".part")
            key = self._key(file_id)
            try:
                if path.name.endswith(".part") or not await self.redis.run(lambda r, k=key: r.exists(k)):
                    path.unlink(missing_ok=True)
            except RedisUnavailable:
                return  # unknown: keep everything until the next sweep

    # --- what a batch writes ----------------------------------------------------------------------------
    def sink(self, owner: str, filename: str) -> OutputFile:
        return OutputFile(self, owner, new_file_id(), filename)


class OutputFile:
    """A batch's output or error file: created (file and record) with its first line, appended to as
    rows finish, its size written to the record when the batch ends."""

    def __init__(self, files: BatchFiles, owner: str, file_id: str, filename: str) -> None:
        self.files = files
        self.owner = owner
        self.id = file_id
        self.filename = filename
        self.lines = 0
        self._handle: IO[bytes] | None = None
        self._object: FileObject | None = None

    @property
    def created(self) -> bool:
        return self._handle is not None

    async def write(self, line: dict[str, Any]) -> None:
        if self._handle is None:
            self.files._ensure_root()
            fd = os.open(self.files.path(self.id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._handle = os.fdopen(fd, "ab")
            self._object = FileObject(
                id=self.id,
                bytes=0,
                created_at=int(time.time()),
                filename=self.filename,
                purpose="batch_output",
            )
            await self._save(only_if_exists=False)
        self._handle.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        self._handle.flush()  # a reader of the file (GET .../content) sees whole lines
        self.lines += 1

    async def close(self) -> None:
        if self._handle is None or self._object is None:
            return
        self._object.bytes = self._handle.tell()
        self._handle.close()
        await self._save(only_if_exists=True)

    async def _save(self, *, only_if_exists: bool) -> None:
        assert self._object is not None
        try:
            await self.files.save(self.owner, self._object, only_if_exists=only_if_exists)
        except RedisUnavailable:
            log.warning("batch file %s: record not saved (Redis unavailable)", self.id)


class _LineCounter:
    """Bytes, non-blank lines and UTF-8 validity of a stream fed in chunks of any size."""

    def __init__(self) -> None:
        self.bytes = 0
        self.rows = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._line_has_text = False

    def feed(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        try:
            self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise bad_request("the file is not UTF-8 text (JSONL)", "file", "invalid_file_format") from exc
        parts = chunk.split(b"\n")
        for part in parts[:-1]:
            if self._line_has_text or part.strip():
                self.rows += 1
            self._line_has_text = False
        self._line_has_text = self._line_has_text or bool(parts[-1].strip())

    def finish(self) -> None:
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise bad_request("the file is not UTF-8 text (JSONL)", "file", "invalid_file_format") from exc
        if self._line_has_text:
            self.rows += 1
            self._line_has_text = False


async def _bounded(stream: AsyncIterator[bytes], file_limit: int) -> AsyncIterator[bytes]:
    """The body as it arrives, cut off (413) once it cannot hold a file within the limit."""
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > file_limit + _MULTIPART_SLACK:
            raise _too_large(file_limit)
        yield chunk


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the file exceeds the limit of {limit} bytes", param="file", code="file_too_large")
