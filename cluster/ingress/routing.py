"""Which Serve application gets the traffic: the live colour, and during an upgrade the candidate with its
share. Kept in `<data_dir>/run/colours.json`, written by `cluster/upgrade`, read by the Nginx and Traefik
renderers and by everything that looks up the live application (CLI, folder sync, batch jobs).

Two application slots exist: `serve.app_name` on route prefix `/` (what `up` deploys) and
`<app_name>-2` on `/<app_name>-2`; an upgrade deploys the new version into the slot the live one does
not hold, so the colours alternate between them. The proxies add the prefix, so clients never see it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from cluster.settings import RaychatSettings

RECORD = "colours.json"


class Colour(BaseModel):
    app: str = Field(description="the Serve application's name")
    prefix: str = Field(description="its route prefix: '/' or '/<app>'")
    version: str = Field("", description="what its responses carry as X-Raychat-Version")
    model_id: str = ""
    config_file: str | None = Field(None, description="the settings file it was deployed from")
    store_dir: str | None = Field(None, description="its knowledge store (another one after a re-index)")

    @property
    def path_prefix(self) -> str:
        """What the proxies put before a request's path ('' for the '/' slot)."""
        return "" if self.prefix == "/" else self.prefix


class Routing(BaseModel):
    live: Colour
    candidate: Colour | None = None
    candidate_weight: int = Field(0, ge=0, le=100, description="percent of requests the candidate gets")
    writes_to_live: bool = Field(
        False,
        description="knowledge-base writes (create, upload, delete) all go to the live colour: a re-index "
        "builds the candidate's tables from the live ones, which stay the truth until the end",
    )

    rolling: bool = Field(
        False,
        description="a rolling upgrade replaces the live app's replicas in place: the proxies go through "
        "Serve's proxy, which knows which Gateway replicas run, old or new",
    )

    @property
    def split(self) -> bool:
        """The proxies reach the apps through Serve's proxy by prefix: while both colours run (the
        direct-ingress ports would mix the two apps' replicas), and while a rolling upgrade runs."""
        return self.candidate is not None or self.rolling


# Knowledge-base writes and listings: everything under /v1/knowledge_bases but a search.
KB_WRITES = r"^/v1/knowledge_bases(/[^/]+(/documents(/.*)?)?)?$"
# Uploads, documents and Batch API input files: the routes whose body may be as large as
# gateway.max_upload_bytes.
UPLOAD_PATH = r"^/v1/(knowledge_bases/[^/]+/documents|files)$"


def slots(settings: RaychatSettings) -> tuple[str, str]:
    return settings.serve.app_name, f"{settings.serve.app_name}-2"


def prefix_of(settings: RaychatSettings, app: str) -> str:
    return "/" if app == settings.serve.app_name else f"/{app}"


def other_slot(settings: RaychatSettings, app: str) -> str:
    first, second = slots(settings)
    return second if app == first else first


def _path(settings: RaychatSettings) -> Path:
    return settings.run_dir / RECORD


def load(settings: RaychatSettings) -> Routing:
    """The record; without one (a fresh `up`), the first slot is live."""
    path = _path(settings)
    if path.is_file():
        return Routing.model_validate_json(path.read_text())
    app = settings.serve.app_name
    return Routing(live=Colour(app=app, prefix="/", model_id=settings.llm.model_id))


def save(settings: RaychatSettings, routing: Routing) -> None:
    """Written whole and renamed into place: a reader never sees half a record."""
    path = _path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(routing.model_dump(mode="json"), indent=2))
    os.replace(tmp, path)


def clear(settings: RaychatSettings) -> None:
    _path(settings).unlink(missing_ok=True)


def live_app(settings: RaychatSettings) -> str:
    """The Serve application that serves clients now (handles for jobs, folder sync, status)."""
    return load(settings).live.app
