"""`data/logs/security.jsonl`: refused requests and administrative actions, one JSON line each, with the
hashed identity (never a key), the trace id, the action, its target and the outcome. Written with the
audit log's writer (rotation by size, safe across replicas)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from deployments.gateway.audit import AuditLog


class SecurityLog:
    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self._file = AuditLog(path, max_bytes=max_bytes, backups=backups)

    def record(
        self,
        *,
        trace_id: str | None,
        identity: str | None,
        action: str,
        target: str | None,
        outcome: str,
        **detail: Any,
    ) -> None:
        """`identity` is already hashed (Identity.hashed) or None for a caller without a valid one."""
        self._file.write(
            {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "trace_id": trace_id,
                "identity": identity,
                "action": action,
                "target": target,
                "outcome": outcome,
                **detail,
            }
        )
