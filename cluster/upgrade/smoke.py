"""The smoke test a new colour passes before it gets a single client request: every kind of call,
sent straight to it (Serve's proxy, its route prefix, mTLS, the service key), each answer checked for its
shape and for the colour's own X-Raychat-Version."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from cluster import credentials, planes
from cluster.ingress.routing import Colour
from cluster.settings import RaychatSettings
from cluster.waiting import WaitTimeout, wait_until

# A line per request at INFO would bury the upgrade's own progress.
logging.getLogger("httpx").setLevel(logging.WARNING)

SMOKE_TEXT = (
    "The raychat upgrade check document. The lighthouse keeper of Vardø island is named Astrid Lund; "
    "she has kept its lamp since 1987 and counts the passing ships in a blue notebook."
)
QUESTION = "Who is the lighthouse keeper of Vardø island?"


class SmokeFailed(RuntimeError):
    """A smoke-test call failed; the message names it (never a credential)."""


@dataclass
class SmokeReport:
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds

    def line(self) -> str:
        return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.steps.items())


def colour_client(settings: RaychatSettings, colour: Colour, timeout: float) -> httpx.Client:
    """HTTP straight to one colour: Serve's proxy, the colour's route prefix, raychat's client
    certificate (Serve's port wants it) and the service key (an admin: raychat's own tools)."""
    return httpx.Client(
        base_url=f"{settings.serve_url}{colour.path_prefix}",
        headers=credentials.auth_headers(settings),
        verify=planes.client_context(settings, client_certificate=True) or True,
        timeout=timeout,
    )


class _Client:
    def __init__(self, settings: RaychatSettings, colour: Colour) -> None:
        self.colour = colour
        self.http = colour_client(settings, colour, settings.upgrade.smoke_timeout_s)

    def check(self, step: str, response: httpx.Response) -> httpx.Response:
        if not 200 <= response.status_code < 300:
            raise SmokeFailed(f"{step}: HTTP {response.status_code}: {response.text[:300]}")
        version = response.headers.get("x-raychat-version")
        if version != self.colour.version:
            raise SmokeFailed(f"{step}: answered by version {version!r}, not {self.colour.version!r}")
        return response

    def post(self, step: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.check(step, self.http.post(path, json=body)).json()

    def ready(self, timeout_s: float, interval_s: float = 2.0) -> None:
        """Probes /readyz as a load balancer does, until it answers ready. Serve calls an app ready when
        its replicas start; the gateway's first health call to a fresh engine can still miss its few
        seconds on a loaded machine (a re-index beside it), which means "not yet", not "broken"."""
        last: list[httpx.Response] = []

        def answered() -> bool:
            last[:] = [self.http.get("/readyz")]
            return last[0].status_code == 200

        try:
            wait_until(answered, timeout_s=timeout_s, interval_s=interval_s, what="the new version is ready")
        except WaitTimeout:
            self.check("readiness", last[0])  # raises SmokeFailed with the last answer
            raise
        self.check("readiness", last[0])


def _content(body: dict[str, Any], step: str) -> str:
    try:
        choice = body["choices"][0]
        return str(choice.get("message", {}).get("content") or choice.get("text") or "")
    except (KeyError, IndexError, TypeError) as exc:
        raise SmokeFailed(f"{step}: no choices in the answer") from exc


def _stream(client: _Client, model: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
    text, done = "", False
    with client.http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
        client.check("streamed chat", resp)
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                raise SmokeFailed(f"streamed chat: {event['error'].get('message')}")
            for choice in event.get("choices", []):
                text += (choice.get("delta") or {}).get("content") or ""
    if not done or not text:
        raise SmokeFailed("streamed chat: the stream ended without text and [DONE]")


def run(settings: RaychatSettings, colour: Colour, say: Callable[[str], None]) -> SmokeReport:
    """Every step in turn; SmokeFailed at the first that fails. The knowledge base it makes is deleted
    whatever happens."""
    client = _Client(settings, colour)
    model = settings.llm.model_id
    report = SmokeReport()
    kb = f"raychat-upgrade-check-{uuid.uuid4().hex[:8]}"
    chat = {"model": model, "cache": False, "max_tokens": 8}

    def step(name: str, call: Callable[[], object]) -> None:
        started = time.monotonic()
        try:
            call()
        except httpx.HTTPError as exc:
            raise SmokeFailed(f"{name}: {type(exc).__name__}: {exc}") from exc
        report.steps[name] = time.monotonic() - started
        say(f"  smoke test: {name} ok ({report.steps[name]:.1f}s)")

    def plain_chat() -> None:
        messages = [{"role": "user", "content": "Say hello."}]
        if not _content(client.post("chat", "/v1/chat/completions", {**chat, "messages": messages}), "chat"):
            raise SmokeFailed("chat: empty answer")

    def completion() -> None:
        body = {"model": model, "prompt": "Once upon a time", "max_tokens": 8}
        if not _content(client.post("completion", "/v1/completions", body), "completion"):
            raise SmokeFailed("completion: empty answer")

    def embeddings() -> None:
        body = {"input": ["raychat upgrade check"]}
        data = client.post("embeddings", "/v1/embeddings", body).get("data") or []
        if not data or not data[0].get("embedding"):
            raise SmokeFailed("embeddings: no vector")

    def knowledge_base() -> None:
        client.post("knowledge base", "/v1/knowledge_bases", {"name": kb})
        files = {"files": ("check.txt", SMOKE_TEXT.encode(), "text/plain")}
        upload = client.check("upload", client.http.post(f"/v1/knowledge_bases/{kb}/documents", files=files))
        results = upload.json().get("data") or [{}]
        if results[0].get("status") != "ingested":
            raise SmokeFailed(f"upload: {results[0].get('error') or results[0]}")

    def search() -> None:
        hits = client.post("search", f"/v1/knowledge_bases/{kb}/search", {"query": QUESTION}).get("data")
        if not hits or "Astrid" not in json.dumps(hits, ensure_ascii=False):
            raise SmokeFailed("search: the check document was not found")

    def kb_chat() -> None:
        messages = [{"role": "user", "content": QUESTION}]
        body = {**chat, "messages": messages, "knowledge_base": kb, "max_tokens": 16}
        answer = client.post("knowledge-base chat", "/v1/chat/completions", body)
        if not _content(answer, "knowledge-base chat"):
            raise SmokeFailed("knowledge-base chat: empty answer")

    try:
        step("readiness", lambda: client.ready(settings.upgrade.smoke_timeout_s))
        step("chat", plain_chat)
        step("streamed chat", lambda: _stream(client, model))
        step("completion", completion)
        step("embeddings", embeddings)
        step("knowledge base", knowledge_base)
        step("search", search)
        step("knowledge-base chat", kb_chat)
    finally:
        try:
            client.http.delete(f"/v1/knowledge_bases/{kb}")
        except httpx.HTTPError:
            pass  # a colour that cannot delete it is being torn down anyway
        client.http.close()
    return report
