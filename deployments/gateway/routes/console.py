"""The web console: `/` and `/console/<file>`, static files the project ships (no build step), on the same
origin as the API, so it works behind Nginx, Traefik and TLS as they are. Not in the OpenAPI document:
the console is a client of the API, not part of it. Its security headers come from
`middleware.SecurityHeaders`, on every response."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from deployments.gateway import services
from deployments.gateway.protocol import APIError

router = APIRouter()

STATIC_DIR = Path(__file__).resolve().parent.parent / "console" / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The files there, by name, listed once: a request names one of them or gets 404, never a path.
FILES = {p.name: p for p in STATIC_DIR.glob("*") if p.suffix in _TYPES} if STATIC_DIR.is_dir() else {}


def _file(request: Request, name: str) -> FileResponse:
    if not services.of(request).config.console.enabled or name not in FILES:
        raise APIError(404, "not found", code="not_found")
    # Revalidated on every load: after an upgrade, no browser keeps the old console's scripts.
    return FileResponse(
        FILES[name], media_type=_TYPES[FILES[name].suffix], headers={"Cache-Control": "no-cache"}
    )


@router.get("/", include_in_schema=False)
async def console_page(request: Request) -> FileResponse:
    return _file(request, "index.html")


@router.get("/console/{name}", include_in_schema=False)
async def console_asset(name: str, request: Request) -> FileResponse:
    return _file(request, name)
