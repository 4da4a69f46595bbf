"""Keys and tokens for the identity tests: made through the admin API of the running stack."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Stack, tls_context


@dataclass(frozen=True)
class Key:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_key(stack: Stack, role: str, kbs: list[str] | None = None, **fields: Any) -> Key:
    body = {"name": f"test-{role}", "role": role, **fields}
    if kbs is not None:
        body["knowledge_bases"] = kbs
    created = stack.http.post(f"{stack.url}/v1/admin/keys", json=body, timeout=30)
    assert created.status_code == 201, created.text
    data = created.json()
    return Key(data["id"], data["key"])


def bearer(credential: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"} if credential else {}


def call(
    url: str, method: str, credential: str | None, headers_extra: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    headers = bearer(credential) | (headers_extra or {})
    return httpx.request(method, url, headers=headers, timeout=120, verify=tls_context(), **kwargs)


def jsonl(path: Path) -> list[dict[str, Any]]:
    """A log file's complete lines: a line a gateway replica is appending can be read half written (a
    reader does not wait for a writer); the next read has it whole."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
