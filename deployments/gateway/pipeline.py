"""The generation request path, in order. Read this file to follow a chat request through the code.

    identify -> parse -> authorize -> conversation (session, question cache) -> retrieval -> generation
    -> record

Each stage is one module under `stages/`, called with the request's context; it reads the typed
request and fills in its own part. A stage that answers (a question-cache hit) ends the walk early, and
`record` sends whatever answer there is. Adding a stage is one module and one line in `STAGE_ORDER`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fastapi.responses import Response

from deployments.gateway.context import RequestContext
from deployments.gateway.stages.record import Record


class Stage(Protocol):
    async def __call__(self, ctx: RequestContext) -> None: ...


STAGE_ORDER = ("identify", "parse", "authorize", "conversation", "retrieval", "generation")


class Pipeline:
    def __init__(self, stages: dict[str, Stage], record: Record) -> None:
        missing = set(STAGE_ORDER) - set(stages)
        assert not missing, f"stages without an implementation: {sorted(missing)}"
        self.stages: Sequence[Stage] = [stages[name] for name in STAGE_ORDER]
        self.record = record

    async def run(self, ctx: RequestContext) -> Response:
        self.record.metrics.ensure_started()
        try:
            for stage in self.stages:
                if ctx.answer is not None:
                    break
                await stage(ctx)
            return await self.record.respond(ctx)
        except BaseException:
            ctx.end()
            raise
