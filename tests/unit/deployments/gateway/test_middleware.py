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


def strip(scope: dict[str, Any]) -> dict[str, Any]:
    from deployments.gateway.middleware import StripRoutePrefix

    seen: list[dict[str, Any]] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    asyncio.run(StripRoutePrefix(inner)(scope, None, None))
    return seen[0]


def test_a_route_prefix_is_taken_off_before_anything_sees_the_path() -> None:
    # Serve hands a prefixed app (an upgrade's second slot) the full path and the prefix as root_path;
    # authentication decides by `/v1/`, so it must see the path without the prefix.
    scope = strip(
        {
            "type": "http",
            "path": "/raychat-2/v1/models",
            "raw_path": b"/raychat-2/v1/models",
            "root_path": "/raychat-2",
        }
    )
    assert scope["path"] == "/v1/models" and scope["raw_path"] == b"/v1/models" and scope["root_path"] == ""
    assert strip({"type": "http", "path": "/raychat-2", "root_path": "/raychat-2"})["path"] == "/"
    assert strip({"type": "http", "path": "/v1/models", "root_path": ""})["path"] == "/v1/models"


def test_every_response_carries_the_version() -> None:
    from deployments.gateway.middleware import TraceAndAudit

    sent: list[dict[str, Any]] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = TraceAndAudit(inner, audit_log=lambda: None, version=lambda: "v2")
    asyncio.run(middleware({"type": "http", "path": "/healthz", "headers": []}, None, send))
    headers = dict(sent[0]["headers"])
    assert headers[b"x-raychat-version"] == b"v2" and b"x-trace-id" in headers


def test_api_requests_in_flight_are_counted_until_they_end() -> None:
    from deployments.gateway.middleware import TraceAndAudit

    class Gauges:
        def __init__(self) -> None:
            self.value, self.seen = 0.0, []

        def gauge_add(self, name: str, delta: float) -> None:
            assert name == "raychat_requests_in_flight"
            self.value += delta

        def inc(self, *args: Any) -> None:
            pass

    gauges = Gauges()

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        gauges.seen.append(gauges.value)  # counted while the route runs
        if scope["path"] == "/v1/fails":
            raise RuntimeError("boom")

    async def send(message: dict[str, Any]) -> None:
        pass

    middleware = TraceAndAudit(inner, audit_log=lambda: None, metrics=lambda: gauges)
    asyncio.run(middleware({"type": "http", "path": "/v1/models", "headers": []}, None, send))
    with pytest.raises(RuntimeError):
        asyncio.run(middleware({"type": "http", "path": "/v1/fails", "headers": []}, None, send))
    asyncio.run(middleware({"type": "http", "path": "/healthz", "headers": []}, None, send))
    assert gauges.seen == [1.0, 1.0, 0.0] and gauges.value == 0
