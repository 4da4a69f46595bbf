"""Audit lines and trace ids on the real stack: one line per request, user hashed, prompt never written."""

from __future__ import annotations

import hashlib
import time
import uuid

from deployments.gateway.auth.keys import split
from tests.conftest import ROOT, Stack
from tests.integration.identity_helpers import jsonl

AUDIT = ROOT / ".test-data" / "logs" / "audit.jsonl"


def audit_line(trace_id: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if AUDIT.exists():
            for record in jsonl(AUDIT):
                if record["trace_id"] == trace_id:
                    return record
        time.sleep(0.2)
    raise AssertionError(f"no audit line for {trace_id}")


def test_chat_with_personal_data_is_flagged_and_not_written(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    key = stack.admin_key  # a made-up key would be refused now
    parts = split(key)  # `rc-<id>.<secret>`: the audit names the key id (hashed), never the credential
    assert parts is not None
    key_id = parts[0]
    body = {"messages": [{"role": "user", "content": f"{marker} my phone is 13812345678"}], "max_tokens": 4}
    resp = stack.http.post(
        f"{stack.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    assert resp.status_code == 200
    trace_id = resp.headers["x-trace-id"]
    assert str(uuid.UUID(trace_id, version=4)) == trace_id
    record = audit_line(trace_id)
    assert set(record) == {"timestamp", "trace_id", "user", "endpoint", "model", "tokens", "sensitive"}
    assert record["user"] == hashlib.sha256(key_id.encode()).hexdigest()
    assert record["endpoint"] == "/v1/chat/completions" and record["sensitive"] is True
    assert isinstance(record["tokens"], int) and record["tokens"] > 0
    assert marker not in AUDIT.read_text() and "13812345678" not in AUDIT.read_text()


def test_stream_and_errors_are_audited_too(stack: Stack) -> None:
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "stream": True}
    with stack.http.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=120) as resp:
        trace_id = resp.headers["x-trace-id"]
        list(resp.iter_lines())
    streamed = audit_line(trace_id)
    assert streamed["sensitive"] is False and streamed["tokens"] > 0
    bad = stack.http.post(f"{stack.url}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert bad.status_code == 400
    assert audit_line(bad.headers["x-trace-id"])["tokens"] == 0
