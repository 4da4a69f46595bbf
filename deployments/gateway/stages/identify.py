"""Stage 1, identify: who is asking. The identity issue puts key verification and quotas here."""

from __future__ import annotations

from deployments.gateway.context import Caller, RequestContext


class Identify:
    async def __call__(self, ctx: RequestContext) -> None:
        headers = ctx.http.headers
        auth = headers.get("authorization") or ""
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        ctx.caller = Caller(key=key or None, header_user=headers.get("x-user-id"))
