"""The pipeline walks the stages in order, stops at an answer, and ends the request however it ends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from deployments.gateway.context import JsonAnswer, RequestContext
from deployments.gateway.pipeline import STAGE_ORDER, Pipeline


class Recorder:
    def __init__(self) -> None:
        self.metrics = SimpleNamespace(ensure_started=lambda: None)
        self.responded: list[RequestContext] = []

    async def respond(self, ctx: RequestContext) -> Any:
        self.responded.append(ctx)
        ctx.end()
        return "response"


def stages(log: list[str], answer_at: str | None = None, fail_at: str | None = None) -> dict[str, Any]:
    def make(name: str) -> Any:
        async def stage(ctx: RequestContext) -> None:
            log.append(name)
            if name == fail_at:
                raise RuntimeError(name)
            if name == answer_at:
                ctx.answer = JsonAnswer({"cached": True})

        return stage

    return {name: make(name) for name in STAGE_ORDER}


def context() -> RequestContext:
    return RequestContext("chat", SimpleNamespace(headers={}, state=SimpleNamespace()))  # type: ignore[arg-type]


def test_stages_run_in_order_then_record() -> None:
    log: list[str] = []
    record = Recorder()
    assert asyncio.run(Pipeline(stages(log), record).run(context())) == "response"  # type: ignore[arg-type]
    assert log == ["identify", "parse", "authorize", "conversation", "retrieval", "generation"]
    assert len(record.responded) == 1


def test_an_answer_ends_the_walk_early() -> None:
    log: list[str] = []
    record = Recorder()
    ctx = context()
    asyncio.run(Pipeline(stages(log, answer_at="conversation"), record).run(ctx))  # type: ignore[arg-type]
    assert log == ["identify", "parse", "authorize", "conversation"]
    assert record.responded == [ctx]


def test_a_failing_stage_ends_the_request_once() -> None:
    log: list[str] = []
    ended: list[int] = []
    ctx = context()
    ctx.on_end(lambda: ended.append(1))
    with pytest.raises(RuntimeError):
        asyncio.run(Pipeline(stages(log, fail_at="retrieval"), Recorder()).run(ctx))  # type: ignore[arg-type]
    assert log[-1] == "retrieval" and ended == [1]
    ctx.end()
    assert ended == [1]


def test_every_stage_needs_an_implementation() -> None:
    partial = stages([])
    del partial["retrieval"]
    with pytest.raises(AssertionError, match="retrieval"):
        Pipeline(partial, Recorder())  # type: ignore[arg-type]
