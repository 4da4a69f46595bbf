"""A path with a control character is refused with OpenAI's error format before routing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from deployments.gateway.middleware import RefuseControlCharacters


def call(path: str) -> tuple[list[dict[str, Any]], bool]:
    sent: list[dict[str, Any]] = []
    reached = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(RefuseControlCharacters(inner)({"type": "http", "path": path}, None, send))
    return sent, bool(reached)


@pytest.mark.parametrize("path", ["/v1/knowledge_bases/kb/documents/a.txt\n", "/v1/sessions/s\x00", "/x\x7f"])
def test_control_characters_are_refused(path: str) -> None:
    sent, reached = call(path)
    assert not reached and sent[0]["status"] == 400
    error = json.loads(sent[1]["body"])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_path"


def test_ordinary_paths_pass_through() -> None:
    assert call("/v1/knowledge_bases/知识库/documents/a b.txt") == ([], True)
