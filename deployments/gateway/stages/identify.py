"""Stage 1, identify: who is asking, as the Authenticate middleware verified it (key or JWT, quota
already counted). A request that reached the pipeline without an identity is refused: fail closed."""

from __future__ import annotations

from deployments.gateway.auth.permissions import identity_of
from deployments.gateway.context import Caller, RequestContext


class Identify:
    async def __call__(self, ctx: RequestContext) -> None:
        identity = identity_of(ctx.http.scope.get("state"))
        ctx.caller = Caller(identity=identity, header_user=ctx.http.headers.get("x-user-id"))
