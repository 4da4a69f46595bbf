from __future__ import annotations

import hashlib
import json
import multiprocessing
import uuid
from pathlib import Path

import jsonschema

from deployments.gateway.audit import AuditLog, hash_user

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["timestamp", "trace_id", "user", "endpoint", "model", "tokens", "sensitive"],
    "properties": {
        "timestamp": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"},
        "trace_id": {
            "type": "string",
            "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        },
        "user": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "endpoint": {"type": "string"},
        "model": {"type": ["string", "null"]},
        "tokens": {"type": "integer", "minimum": 0},
        "sensitive": {"type": "boolean"},
    },
}


def test_record_has_exactly_the_seed_fields(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.record(
        trace_id=str(uuid.uuid4()),
        user="key-123",
        endpoint="/v1/chat/completions",
        model="m",
        tokens=7,
        sensitive=True,
    )
    line = json.loads((tmp_path / "audit.jsonl").read_text())
    jsonschema.validate(line, SCHEMA)
    assert line["user"] == hashlib.sha256(b"key-123").hexdigest() != "key-123"
    assert hash_user(None) == hashlib.sha256(b"anonymous").hexdigest()


def test_rotates_by_size(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=600, backups=2)
    for _ in range(20):
        log.record(trace_id=str(uuid.uuid4()), user="u", endpoint="/e", model="m", tokens=1, sensitive=False)
    files = sorted(p.name for p in tmp_path.glob("audit.jsonl*") if not p.name.endswith(".lock"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 600 for f in files)


def _writer(path: str, n: int) -> None:
    log = AuditLog(Path(path), max_bytes=4000, backups=50)
    for _ in range(n):
        log.record(trace_id=str(uuid.uuid4()), user="p", endpoint="/e", model="m", tokens=1, sensitive=False)


def test_several_processes_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_writer, args=(str(path), 60)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = [
        ln
        for f in tmp_path.glob("audit.jsonl*")
        if not f.name.endswith(".lock")
        for ln in f.read_text().splitlines()
    ]
    assert len(lines) == 180
    for ln in lines:
        jsonschema.validate(json.loads(ln), SCHEMA)
