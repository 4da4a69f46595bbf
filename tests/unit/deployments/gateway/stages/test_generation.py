"""The gateway sends a request again when its LLM replica is lost before the first answer arrives."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray.exceptions import ActorUnavailableError, RayActorError

from deployments.gateway.protocol import APIError
from deployments.gateway.stages.generation import open_stream, replica_lost


class _Stream:
    def __init__(self, first: Any) -> None:
        self.first = first

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        if isinstance(self.first, BaseException):
            raise self.first
        return self.first


def _starts(*outcomes: Any) -> tuple[list[int], Any]:
    calls: list[int] = []

    def start() -> _Stream:
        calls.append(1)
        return _Stream(outcomes[len(calls) - 1])

    return calls, start


def test_lost_replica_is_retried_then_answers() -> None:
    calls, start = _starts(RayActorError(), ActorUnavailableError("gone", None), "answer")
    retried: list[int] = []
    first, _ = asyncio.run(open_stream(start, retries=2, on_retry=lambda: retried.append(1)))
    assert first == "answer" and len(calls) == 3 and len(retried) == 2


def test_retries_exhausted_is_a_503_with_retry_after() -> None:
    _, start = _starts(RayActorError(), RayActorError())
    with pytest.raises(APIError) as err:
        asyncio.run(open_stream(start, retries=1))
    assert err.value.status == 503 and err.value.headers["Retry-After"] == "1"


def test_other_errors_are_not_retried() -> None:
    calls, start = _starts(ValueError("bad request"), "never")
    with pytest.raises(ValueError):
        asyncio.run(open_stream(start, retries=2))
    assert len(calls) == 1 and not replica_lost(ValueError())
