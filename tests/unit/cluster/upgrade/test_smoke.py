"""The smoke test's readiness probe: a fresh version that is "not yet" ready gets probed again until its
time runs out; one that never gets ready fails with its last answer."""

from __future__ import annotations

import httpx
import pytest

from cluster.ingress.routing import Colour
from cluster.upgrade import smoke

GREEN = Colour(app="raychat-2", prefix="/raychat-2", version="v2")


def _client(answers: list[int]) -> tuple[smoke._Client, list[int]]:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = answers[min(len(seen), len(answers) - 1)]
        seen.append(status)
        body = {"status": "ready"} if status == 200 else {"error": {"message": "not ready"}}
        return httpx.Response(status, json=body, headers={"x-raychat-version": GREEN.version})

    client = object.__new__(smoke._Client)
    client.colour = GREEN
    client.http = httpx.Client(base_url="http://green", transport=httpx.MockTransport(handler))
    return client, seen


def test_not_yet_ready_is_probed_again_until_ready() -> None:
    client, seen = _client([503, 503, 200])
    client.ready(timeout_s=5, interval_s=0.01)
    assert seen == [503, 503, 200]


def test_never_ready_fails_with_the_last_answer() -> None:
    client, seen = _client([503])
    with pytest.raises(smoke.SmokeFailed, match="readiness: HTTP 503"):
        client.ready(timeout_s=0.05, interval_s=0.01)
    assert len(seen) >= 2


def test_ready_from_another_version_fails() -> None:
    client, _ = _client([200])
    client.colour = GREEN.model_copy(update={"version": "v3"})
    with pytest.raises(smoke.SmokeFailed, match="answered by version 'v2'"):
        client.ready(timeout_s=1, interval_s=0.01)
