"""Every failure the gateway answers, in OpenAI's format `{"error": {"message", "type", "param", "code"}}`.

The error itself (`APIError`) is part of the protocol; this module turns it, and whatever FastAPI or an
unexpected exception raises, into a response.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.gateway.auth.permissions import AccessDenied
from deployments.gateway.protocol import APIError, bad_request

log = logging.getLogger("raychat.gateway")


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def record_security_event(request: Request, action: str, target: str | None, outcome: str) -> None:
    """A line in security.jsonl: refusals of what an identity may not do, and administrative actions."""
    from deployments.gateway import services  # services -> pipeline -> stages -> this module

    svc = services.current()
    if svc is None:
        return
    state = request.scope.get("state", {})
    identity = state.get("identity")
    svc.access.security.record(
        trace_id=state.get("trace_id"),
        identity=identity.hashed if identity is not None else None,
        action=action,
        target=target,
        outcome=outcome,
    )


def from_engine_error(error: Any) -> APIError:
    """vLLM's ErrorResponse (returned as a value, not raised) as an APIError with its status."""
    info = getattr(error, "error", error)
    status = int(getattr(info, "code", 500) or 500)
    if status < 400 or status > 599:
        status = 500
    message = str(getattr(info, "message", info))
    return APIError(status, message, param=getattr(info, "param", None), code=_engine_code(status, message))


def _engine_code(status: int, message: str) -> str | None:
    if status == 400 and "context length" in message:
        return "context_length_exceeded"
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        if isinstance(exc, AccessDenied):
            record_security_event(
                request, f"{request.method} {request.url.path}", None, f"denied_{exc.status}"
            )
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return error_response(bad_request(str(first.get("msg", "invalid request")), param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(APIError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(APIError(500, "internal error; see the gateway log", code="internal_error"))


async def send_error(send: Any, error: APIError) -> None:
    """The error as a response straight from ASGI middleware, before any route (or FastAPI) runs."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="raychat"'))
    headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
