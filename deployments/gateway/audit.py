"""The audit log: one JSON line per request at data/logs/audit.jsonl, rotated by size.

Fields, exactly: timestamp (ISO 8601), trace_id (uuid4), user (sha256 of the user or key id), endpoint,
model, tokens, sensitive. The prompt and the answer are never written; only whether they carried personal
data (deployments/pii.py). Several gateway replicas on a node append to the same file: each write and
each rotation happens under an exclusive flock, and a writer whose file was rotated away reopens it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

ANONYMOUS = "anonymous"


def hash_user(user: str | None) -> str:
    return hashlib.sha256((user or ANONYMOUS).encode()).hexdigest()


class AuditLog:
    def __init__(self, path: Path, *, max_bytes: int = 50 * 1024 * 1024, backups: int = 5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not self.path.exists() or os.fstat(self._fd).st_ino != os.stat(self.path).st_ino:
                    os.close(self._fd)  # another replica rotated the file
                    self._fd = self._open()
                if os.fstat(self._fd).st_size + len(line) > self.max_bytes and os.fstat(self._fd).st_size:
                    self._rotate()
                    os.close(self._fd)
                    self._fd = self._open()
                os.write(self._fd, line)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record(
        self,
        *,
        trace_id: str,
        user: str | None,
        endpoint: str,
        model: str | None,
        tokens: int,
        sensitive: bool,
    ) -> dict[str, Any]:
        entry = {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "trace_id": trace_id,
            "user": hash_user(user),
            "endpoint": endpoint,
            "model": model,
            "tokens": int(tokens),
            "sensitive": bool(sensitive),
        }
        self.write(entry)
        return entry
