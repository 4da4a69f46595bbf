"""What every part of the fuzz shares: scale, seed and limits, the checked sender, the stored state."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

SCALE = max(1, int(os.environ.get("RAYCHAT_FUZZ_SCALE") or 1))
SEED = int(os.environ.get("RAYCHAT_FUZZ_SEED") or 20260611)
MODEL = "smollm2-135m-instruct"
SMALL_MAX_TOKENS = 4  # every body that could reach the engine asks for at most this many tokens

RESPONSE_LIMIT_S = 30.0  # each answer, even to a 1 MB body, arrives within this ("no hung request")
TIMEOUT = httpx.Timeout(RESPONSE_LIMIT_S, connect=5.0)

# (a) schemathesis: examples per operation, and a time budget for the whole part.
SCHEMA_EXAMPLES = 20 * SCALE  # per operation and mode (valid, invalid)
SCHEMA_GENERATION_EXAMPLES = 10 * SCALE  # chat / completions reach the engine when the case is valid
SCHEMA_BUDGET_S = 90.0 * SCALE
# (b) hostile bodies, (d) hostile requests against stored state.
HOSTILE_EXAMPLES = 60 * SCALE
HOSTILE_BUDGET_S = 45.0 * SCALE
SESSION_EXAMPLES = 15 * SCALE

GENERATION_PATHS = {"/v1/chat/completions", "/v1/completions"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
ONE_MB = 1024 * 1024
KB_DOC = "note.txt"
KB_TEXT = "The fuzz test's knowledge base holds this one sentence about pump lubrication."


# --- plumbing -------------------------------------------------------------------------------------------
def loopback(url: str) -> str:
    host = httpx.URL(url).host
    assert host in LOOPBACK, f"the fuzzer only talks to the local stack, not {url}"
    return url.rstrip("/")


class Budget:
    """A time budget for one part; the clock starts at the first request. Past it, cases are not sent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline: float | None = None
        self.skipped = 0

    def exhausted(self) -> bool:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.seconds
        if now > self.deadline:
            self.skipped += 1
            return True
        return False


@dataclass
class Sent:
    """What one part sent: statuses per route, the slowest answer, KBs that accepted bodies created."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    slowest: float = 0.0
    created_kbs: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"  {route} -> {status}: {n}" for (route, status), n in sorted(self.statuses.items())]
        return "\n".join([*lines, f"  slowest answer {self.slowest:.2f}s"])


def describe(method: str, path: str, content: bytes | None, headers: dict[str, str] | None = None) -> str:
    ctype = (headers or {}).get("Content-Type", "(no content type)")
    body = b"" if content is None else content
    shown = body[:160] + (b"..." if len(body) > 160 else b"")
    return f"{method} {path} [{ctype}, {len(body)} bytes] {shown!r}"


def check_openai_error(status: int, content: bytes, where: str) -> dict[str, Any]:
    """A 4xx body must be OpenAI's error object, exactly the four keys."""
    try:
        body = json.loads(content)
    except ValueError:
        raise AssertionError(f"{where}: {status} without a JSON body: {content[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{where}: {status} body is not {{'error': {{...}}}}: {content[:200]!r}"
    assert set(error) == {"message", "type", "param", "code"}, f"{where}: error keys {sorted(error)}"
    assert isinstance(error["message"], str) and error["message"], f"{where}: empty error message"
    assert isinstance(error["type"], str) and error["type"], f"{where}: error type {error['type']!r}"
    assert error["param"] is None or isinstance(error["param"], str), f"{where}: param {error['param']!r}"
    assert error["code"] is None or isinstance(error["code"], str), f"{where}: code {error['code']!r}"
    return error


def check_answer(resp: httpx.Response, where: str, elapsed: float) -> None:
    assert resp.status_code < 500, f"{where}: {resp.status_code} {resp.text[:500]}"
    assert elapsed <= RESPONSE_LIMIT_S, f"{where}: answered after {elapsed:.1f}s"
    if 400 <= resp.status_code < 500:
        check_openai_error(resp.status_code, resp.content, where)


class Sender:
    """Every hostile request goes through here: loopback only, never a KB that follows a folder, the
    answer checked (< 500, in time, OpenAI's error format), KBs that accepted bodies created deleted again."""

    def __init__(self, http: httpx.Client, sent: Sent) -> None:
        self.http = http
        self.sent = sent

    def __call__(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        route: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        if method == "POST" and path == "/v1/knowledge_bases" and content is not None:
            assert b"source_folder" not in content or folder_is_not_text(content), (
                "the fuzzer must never create a knowledge base that follows a folder"
            )
        where = describe(method, path, content, headers)
        started = time.monotonic()
        try:
            resp = self.http.request(method, path, content=content, headers=headers, **kwargs)
        except httpx.TimeoutException:
            pytest.fail(f"{where}: no answer within {RESPONSE_LIMIT_S}s")
        except httpx.TransportError as exc:
            pytest.fail(f"{where}: the connection failed without an answer: {exc!r}")
        elapsed = time.monotonic() - started
        self.sent.statuses[(route or path, resp.status_code)] += 1
        self.sent.slowest = max(self.sent.slowest, elapsed)
        if method == "POST" and path == "/v1/knowledge_bases" and resp.status_code == 201:
            self._forget(resp)
        check_answer(resp, where, elapsed)
        return resp

    def _forget(self, resp: httpx.Response) -> None:
        name = resp.json()["name"]
        self.sent.created_kbs.append(name)
        gone = self.http.delete(f"/v1/knowledge_bases/{quote(name, safe='')}")
        assert gone.status_code == 200, (
            f"could not delete knowledge base {name!r} a fuzz body created: {gone.text}"
        )


def folder_is_not_text(content: bytes) -> bool:
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return True  # not JSON: the gateway refuses it before anything is created
    return not (isinstance(body, dict) and isinstance(body.get("source_folder"), str))


@dataclass
class Stored:
    kb: str  # one small document; its documents and list entry are compared
    scratch_kb: str  # takes uploads that may be accepted; not compared
    session: str  # one real chat turn; its messages are compared
    before: dict[str, Any] = field(default_factory=dict)


def snapshot(http: httpx.Client, stored: Stored) -> dict[str, Any]:
    kbs = http.get("/v1/knowledge_bases")
    docs = http.get(f"/v1/knowledge_bases/{stored.kb}/documents")
    session = http.get(f"/v1/sessions/{stored.session}")
    for resp in (kbs, docs, session):
        assert resp.status_code == 200, resp.text
    # Other modules' knowledge bases may be moved on by their folder watchers: for those, what a create
    # sets (a refused create must not have replaced them); for ours, everything.
    listed = {
        kb["name"]: kb
        if kb["name"] == stored.kb
        else {k: kb.get(k) for k in ("description", "source_folder")}
        for kb in kbs.json()["data"]
        if kb["name"] != stored.scratch_kb
    }
    return {
        "knowledge_bases": listed,
        "documents": docs.json()["data"],
        "session": session.json()["messages"],
    }
