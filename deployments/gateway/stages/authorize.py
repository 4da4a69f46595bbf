"""Stage 3, authorize: the parsed request against what the caller may do. A knowledge base it is not
granted does not exist for it, before the question cache is asked (a cached answer built from a
knowledge base goes only to identities granted that knowledge base)."""

from __future__ import annotations

from deployments.gateway.auth.permissions import require_read
from deployments.gateway.context import RequestContext
from deployments.gateway.protocol import ChatRequest


class Authorize:
    async def __call__(self, ctx: RequestContext) -> None:
        request = ctx.parsed()
        if isinstance(request, ChatRequest) and request.knowledge_base is not None:
            require_read(ctx.caller.identity, request.knowledge_base)
