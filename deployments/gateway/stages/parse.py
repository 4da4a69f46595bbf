"""Stage 2, parse: the body, read within its size limit, becomes one typed, frozen request."""

from __future__ import annotations

from fastapi import Request

from deployments.gateway import protocol
from deployments.gateway.context import RequestContext
from deployments.gateway.protocol import APIError


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")


async def json_body(request: Request, limit: int) -> dict:
    """The body as a checked JSON object; the declared `user` is kept for the audit of a refusal."""
    body = protocol.parse_json_object(await read_body(request, limit))
    user = body.get("user")
    request.state.body = {"user": user if isinstance(user, str) else None}
    return body


class Parse:
    def __init__(self, served_model: str, max_body_bytes: int, aliases: tuple[str, ...] = ()) -> None:
        self.served_model = served_model
        self.max_body_bytes = max_body_bytes
        self.aliases = aliases

    async def __call__(self, ctx: RequestContext) -> None:
        body = await json_body(ctx.http, self.max_body_bytes)
        header = ctx.http.headers.get("x-session-id")
        if ctx.endpoint == "chat":
            ctx.request = protocol.chat_request(
                body, self.served_model, session_header=header, aliases=self.aliases
            )
        else:
            ctx.request = protocol.completion_request(
                body, self.served_model, session_header=header, aliases=self.aliases
            )
