"""Who may do what, on the real stack through Nginx: every route against every kind of credential, the
sessions and cached answers scoped to their identity, the official clients, the CLI and the logs."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import TEST_ENV, Stack
from tests.integration.identity_helpers import Key, call, jsonl, make_key

MODEL = "smollm2-135m-instruct"
SECRET = "The vault combination of the Shenzhen plant is 7-31-4-1-5-9."
LOGS = Path(TEST_ENV["RAYCHAT_DATA_DIR"]) / "logs"


@dataclass(frozen=True)
class World:
    kb: str  # holds SECRET
    spare_kb: str  # deleted by the admin row of the matrix
    credentials: dict[str, str | None]  # kind -> bearer credential
    throwaway: dict[str, Key]  # per kind: a key the admin-key routes may change or revoke


@pytest.fixture(scope="module")
def world(stack: Stack, jwt_issuer: Any) -> World:
    kb = f"vault-{uuid.uuid4().hex[:6]}"
    assert stack.http.post(f"{stack.url}/v1/knowledge_bases", json={"name": kb}).status_code == 201
    upload = stack.http.post(
        f"{stack.url}/v1/knowledge_bases/{kb}/documents",
        files=[("files", ("vault.txt", SECRET.encode(), "text/plain"))],
        timeout=300,
    )
    assert upload.status_code == 200, upload.text
    revoked = make_key(stack, "user", ["*"])
    assert stack.http.delete(f"{stack.url}/v1/admin/keys/{revoked.id}").status_code == 200
    expired = make_key(stack, "user", ["*"], expires_days=1e-5)  # about a second
    credentials: dict[str, str | None] = {
        "none": None,
        "malformed": "not a key at all",
        "unknown": "rc-0123456789ab." + "A" * 43,
        "revoked": revoked.key,
        "expired key": expired.key,
        "expired JWT": jwt_issuer.token("eve", groups=["raychat-admins"], exp_in=-120),
        "wrong audience": jwt_issuer.token("eve", groups=["raychat-admins"], aud="another-service"),
        "user without grant": make_key(stack, "user", ["some-other-kb"]).key,
        "user with grant": make_key(stack, "user", [kb]).key,
        "JWT user with grant": jwt_issuer.token("carol", groups=["raychat-users"], kbs=[kb]),
        "editor": make_key(stack, "editor", [kb]).key,
        "admin": stack.admin_key,
    }
    time.sleep(1.2)  # the expired key's day fraction is over
    throwaway = {kind: make_key(stack, "user", []) for kind in credentials}
    spare = f"spare-{uuid.uuid4().hex[:6]}"
    assert stack.http.post(f"{stack.url}/v1/knowledge_bases", json={"name": spare}).status_code == 201
    return World(kb, spare, credentials, throwaway)


INVALID = ("none", "malformed", "unknown", "revoked", "expired key", "expired JWT", "wrong audience")
GRANTED = ("user with grant", "JWT user with grant", "editor", "admin")

# (method, path, request kwargs, expected status for: user without grant, granted users, editor, admin)
Route = tuple[str, str, Callable[[World, str], dict[str, Any]], dict[str, int]]


def _chat(world: World, kind: str) -> dict[str, Any]:
    return {"json": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}}


def _kb_chat(world: World, kind: str) -> dict[str, Any]:
    body = _chat(world, kind)["json"] | {"knowledge_base": world.kb, "cache": False}
    return {"json": body}


def _new_kb(world: World, kind: str) -> dict[str, Any]:
    return {"json": {"name": f"new-{uuid.uuid4().hex[:8]}"}}


def _upload(world: World, kind: str) -> dict[str, Any]:
    return {"files": [("files", (f"note-{uuid.uuid4().hex[:6]}.txt", b"routine note", "text/plain"))]}


def _none(world: World, kind: str) -> dict[str, Any]:
    return {}


def _search(world: World, kind: str) -> dict[str, Any]:
    return {"json": {"query": "vault combination", "top_k": 1}}


def _key_body(world: World, kind: str) -> dict[str, Any]:
    return {"json": {"name": "made-in-matrix", "role": "user"}}


def _patch_body(world: World, kind: str) -> dict[str, Any]:
    return {"json": {"rpm": 50}}


NO_FILE, NO_BATCH = "file-" + "0" * 24, "batch_" + "0" * 24  # well-formed ids nobody has


def _batch_file(world: World, kind: str) -> dict[str, Any]:
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}})
    return {
        "files": [("file", ("rows.jsonl", line.encode() + b"\n", "application/jsonl"))],
        "data": {"purpose": "batch"},
    }


def _batch_body(world: World, kind: str) -> dict[str, Any]:
    body = {"input_file_id": NO_FILE, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    return {"json": body}


def expect(no_grant: int, user: int, editor: int, admin: int) -> dict[str, int]:
    return {
        "user without grant": no_grant,
        "user with grant": user,
        "JWT user with grant": user,
        "editor": editor,
        "admin": admin,
    }


ROUTES: list[Route] = [
    ("GET", "/v1/models", _none, expect(200, 200, 200, 200)),
    ("GET", f"/v1/models/{MODEL}", _none, expect(200, 200, 200, 200)),
    ("POST", "/v1/chat/completions", _chat, expect(200, 200, 200, 200)),
    ("POST", "/v1/chat/completions#kb", _kb_chat, expect(404, 200, 200, 200)),
    (
        "POST",
        "/v1/completions",
        lambda w, k: {"json": {"prompt": "hi", "max_tokens": 2}},
        expect(200, 200, 200, 200),
    ),
    ("POST", "/v1/embeddings", lambda w, k: {"json": {"input": "hi"}}, expect(200, 200, 200, 200)),
    ("GET", "/v1/knowledge_bases", _none, expect(200, 200, 200, 200)),
    ("POST", "/v1/knowledge_bases", _new_kb, expect(403, 403, 403, 201)),
    ("GET", "/v1/knowledge_bases/{kb}/documents", _none, expect(404, 200, 200, 200)),
    ("POST", "/v1/knowledge_bases/{kb}/documents", _upload, expect(404, 403, 200, 200)),
    ("POST", "/v1/knowledge_bases/{kb}/documents?wait=false", _upload, expect(404, 403, 202, 202)),
    ("GET", "/v1/knowledge_bases/{kb}/jobs/ingest-0123456789abcdef", _none, expect(404, 404, 404, 404)),
    ("DELETE", "/v1/knowledge_bases/{kb}/documents/missing.txt", _none, expect(404, 403, 404, 404)),
    ("POST", "/v1/knowledge_bases/{kb}/search", _search, expect(404, 200, 200, 200)),
    ("DELETE", "/v1/knowledge_bases/{kb}", _none, expect(404, 403, 403, 0)),  # 0: the admin keeps it
    ("DELETE", "/v1/knowledge_bases/{spare}", _none, expect(404, 404, 404, 200)),
    ("GET", "/v1/me", _none, expect(200, 200, 200, 200)),
    ("GET", "/v1/sessions", _none, expect(200, 200, 200, 200)),
    ("GET", "/v1/sessions/never-made", _none, expect(404, 404, 404, 404)),
    ("DELETE", "/v1/sessions/never-made", _none, expect(404, 404, 404, 404)),
    # The Batch API: every identity for itself; an id that is not its own does not exist.
    ("POST", "/v1/files", _batch_file, expect(200, 200, 200, 200)),
    ("GET", f"/v1/files/{NO_FILE}", _none, expect(404, 404, 404, 404)),
    ("GET", f"/v1/files/{NO_FILE}/content", _none, expect(404, 404, 404, 404)),
    ("DELETE", f"/v1/files/{NO_FILE}", _none, expect(404, 404, 404, 404)),
    ("POST", "/v1/batches", _batch_body, expect(404, 404, 404, 404)),
    ("GET", "/v1/batches", _none, expect(200, 200, 200, 200)),
    ("GET", f"/v1/batches/{NO_BATCH}", _none, expect(404, 404, 404, 404)),
    ("POST", f"/v1/batches/{NO_BATCH}/cancel", _none, expect(404, 404, 404, 404)),
    ("GET", "/v1/admin/keys", _none, expect(403, 403, 403, 200)),
    ("POST", "/v1/admin/keys", _key_body, expect(403, 403, 403, 201)),
    ("GET", "/v1/admin/keys/{throwaway}", _none, expect(403, 403, 403, 200)),
    ("PATCH", "/v1/admin/keys/{throwaway}", _patch_body, expect(403, 403, 403, 200)),
    ("DELETE", "/v1/admin/keys/{throwaway}", _none, expect(403, 403, 403, 200)),
    ("GET", "/v1/admin/cluster", _none, expect(403, 403, 403, 200)),
    ("GET", "/metrics", _none, expect(403, 403, 403, 200)),
]


def _url(stack: Stack, world: World, path: str, kind: str) -> str:
    path = path.split("#")[0].format(kb=world.kb, spare=world.spare_kb, throwaway=world.throwaway[kind].id)
    return f"{stack.url}{path}"


def _never_leaks(stack: Stack, world: World, response: httpx.Response) -> None:
    text = response.text
    assert SECRET not in text and "vault combination" not in text
    assert stack.admin_key.split(".")[1] not in text
    for key in world.throwaway.values():
        assert key.key.split(".")[1] not in text


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_invalid_credentials_get_401_everywhere(stack: Stack, world: World, route: Route) -> None:
    method, path, kwargs, _ = route
    bodies = set()
    for kind in INVALID:
        response = call(
            _url(stack, world, path, kind), method, world.credentials[kind], **kwargs(world, kind)
        )
        assert response.status_code == 401, (kind, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
        _never_leaks(stack, world, response)
        bodies.add(response.text)
    assert len(bodies) == 1  # never says which of them it was


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_roles_and_grants(stack: Stack, world: World, route: Route) -> None:
    method, path, kwargs, expected = route
    for kind, status in expected.items():
        if status == 0:
            continue
        response = call(
            _url(stack, world, path, kind), method, world.credentials[kind], **kwargs(world, kind)
        )
        assert response.status_code == status, (kind, response.text[:300])
        if status == 403:
            assert response.json()["error"]["code"] == "permission_denied"
        if status >= 400:
            _never_leaks(stack, world, response)


def test_a_knowledge_base_not_granted_does_not_exist(stack: Stack, world: World) -> None:
    missing = call(
        f"{stack.url}/v1/knowledge_bases/nothing-here/search", "POST", stack.admin_key, json={"query": "x"}
    )
    hidden = call(
        f"{stack.url}/v1/knowledge_bases/{world.kb}/search",
        "POST",
        world.credentials["user without grant"],
        json={"query": "x"},
    )
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == json.loads(missing.text.replace("nothing-here", world.kb))
    listed = call(f"{stack.url}/v1/knowledge_bases", "GET", world.credentials["user without grant"]).json()
    assert world.kb not in [kb["name"] for kb in listed["data"]]
    granted = call(f"{stack.url}/v1/knowledge_bases", "GET", world.credentials["user with grant"]).json()
    assert [kb["name"] for kb in granted["data"]] == [world.kb]


def test_cached_knowledge_answer_only_for_granted(stack: Stack, world: World) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"vault? {uuid.uuid4().hex}"}],
        "max_tokens": 4,
        "temperature": 0,
        "knowledge_base": world.kb,
    }
    # The cache is best effort (a Redis call slower than redis.socket_timeout_s is a miss, as on a busy
    # CI machine): ask until the answer comes from it, a few times at most.
    for _ in range(4):
        first = call(
            f"{stack.url}/v1/chat/completions", "POST", world.credentials["user with grant"], json=body
        )
        assert first.status_code == 200
        if first.headers["x-cache"] == "hit":
            break
    assert first.headers["x-cache"] == "hit"
    refused = call(
        f"{stack.url}/v1/chat/completions", "POST", world.credentials["user without grant"], json=body
    )
    assert refused.status_code == 404 and "x-cache" not in refused.headers
    _never_leaks(stack, world, refused)


def test_sessions_belong_to_their_identity(stack: Stack, world: World) -> None:
    session = f"mine-{uuid.uuid4().hex[:8]}"
    owner, other = world.credentials["user with grant"], world.credentials["editor"]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "my PIN is 4711"}],
        "max_tokens": 3,
        "session_id": session,
    }
    assert call(f"{stack.url}/v1/chat/completions", "POST", owner, json=body).status_code == 200
    url = f"{stack.url}/v1/sessions/{session}"
    assert call(url, "GET", owner).status_code == 200
    seen = call(url, "GET", other)
    assert seen.status_code == 404 and "4711" not in seen.text
    assert call(url, "DELETE", other).status_code == 404
    # Continuing it as another identity starts that identity's own conversation, with no history.
    follow = body | {"messages": [{"role": "user", "content": "what is my PIN?"}]}
    continued = call(f"{stack.url}/v1/chat/completions", "POST", other, json=follow)
    assert continued.status_code == 200 and continued.headers["x-session-history"] == "0"
    assert "4711" in call(url, "GET", owner).text
    assert call(url, "DELETE", owner).status_code == 200


def test_openai_and_langchain_clients(stack: Stack) -> None:
    from langchain_openai import ChatOpenAI

    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.admin_key, max_retries=0)
    assert client.models.list().data[0].id == MODEL
    anonymous = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="sk-not-a-raychat-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    chat = ChatOpenAI(
        base_url=f"{stack.url}/v1", api_key=stack.admin_key, model=MODEL, max_tokens=4, max_retries=0
    )
    assert isinstance(chat.invoke("Say hello").content, str)
    refused = ChatOpenAI(base_url=f"{stack.url}/v1", api_key="wrong", model=MODEL, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        refused.invoke("Say hello")


def test_open_routes_reveal_nothing(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.url}/readyz", timeout=30).json() == {"status": "ready"}


def test_cli_keys(stack: Stack) -> None:
    created = stack.raychat(
        "keys",
        "create",
        "--name",
        "cli-user",
        "--role",
        "user",
        "--kb",
        "docs",
        "--rpm",
        "5",
        "--expires-days",
        "30",
    )
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert record["role"] == "user" and record["knowledge_bases"] == ["docs"] and record["limits"]["rpm"] == 5
    key = record["key"]
    assert call(f"{stack.url}/v1/models", "GET", key).status_code == 200
    listed = stack.raychat("keys", "list")
    assert listed.returncode == 0 and record["id"] in listed.stdout and key.split(".")[1] not in listed.stdout
    updated = stack.raychat("keys", "update", record["id"], "--tpm", "900", "--role", "editor")
    assert updated.returncode == 0, updated.stderr
    changed = json.loads(updated.stdout)
    assert changed["limits"] == {"rpm": 5, "tpm": 900, "daily_tokens": None} and changed["role"] == "editor"
    bad = stack.raychat("keys", "create", "--name", "x", "--role", "user", "--rpm", "0")
    assert bad.returncode == 2 and "rpm" in bad.stderr
    assert stack.raychat("keys", "revoke", record["id"]).returncode == 0
    time.sleep(5.5)  # every replica's cache (auth.key_cache_s) has let go of it
    assert call(f"{stack.url}/v1/models", "GET", key).status_code == 401
    assert stack.raychat("keys", "revoke", "000000000000").returncode == 1


def test_admin_api_shows_usage_and_never_a_key(stack: Stack) -> None:
    key = make_key(stack, "user", [])
    for _ in range(2):
        assert (
            call(f"{stack.url}/v1/embeddings", "POST", key.key, json={"input": "count me"}).status_code == 200
        )
    time.sleep(0.5)  # the tokens are charged after the answer
    listed = stack.http.get(f"{stack.url}/v1/admin/keys").json()["data"]
    mine = next(k for k in listed if k["id"] == key.id)
    assert mine["usage_today"]["requests"] == 2 and mine["usage_today"]["tokens"] > 0
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert key.key.split(".")[1] not in json.dumps(listed)


def test_audit_and_security_logs(stack: Stack) -> None:
    key = make_key(stack, "user", [])
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    answered = call(f"{stack.url}/v1/chat/completions", "POST", key.key, json=body)
    trace = answered.headers["x-trace-id"]
    refused = call(f"{stack.url}/v1/admin/keys", "GET", key.key)
    assert refused.status_code == 403
    time.sleep(0.5)
    audit = jsonl(LOGS / "audit.jsonl")
    line = next(entry for entry in audit if entry["trace_id"] == trace)
    assert set(line) == {"timestamp", "trace_id", "user", "endpoint", "model", "tokens", "sensitive"}
    assert line["user"] == hashlib.sha256(key.id.encode()).hexdigest()
    security = jsonl(LOGS / "security.jsonl")
    denied = next(e for e in security if e["trace_id"] == refused.headers["x-trace-id"])
    assert (
        denied["outcome"] == "denied_403"
        and denied["identity"] == hashlib.sha256(key.id.encode()).hexdigest()
    )
    assert any(e["action"] == "key.create" and e["target"] == key.id for e in security)
    for log in LOGS.glob("*.jsonl*"):
        text = log.read_text(errors="replace")
        assert key.key not in text and stack.admin_key not in text and key.key.split(".")[1] not in text


def test_admin_key_file_and_up_output(stack: Stack) -> None:
    path = Path(TEST_ENV["RAYCHAT_DATA_DIR"]) / "secrets" / "admin.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert str(path) in stack.up_output and "Authorization: Bearer" in stack.up_output
    again = stack.raychat("up")
    assert again.returncode == 0 and stack.admin_key not in again.stdout  # shown once, reused after
    assert path.read_text().strip() == stack.admin_key


def test_jwt_roles_from_groups(stack: Stack, world: World, jwt_issuer: Any) -> None:
    models = f"{stack.url}/v1/models"
    no_role = call(models, "GET", jwt_issuer.token("mallory", groups=["visitors"]))
    assert no_role.status_code == 403 and no_role.json()["error"]["code"] == "permission_denied"
    admin = jwt_issuer.token("root-ops", groups=["raychat-users", "raychat-admins"])  # the highest wins
    assert call(f"{stack.url}/v1/admin/keys", "GET", admin).status_code == 200
    editor = jwt_issuer.token("writer", groups="raychat-editors", kbs=[world.kb])
    upload = call(
        f"{stack.url}/v1/knowledge_bases/{world.kb}/documents",
        "POST",
        editor,
        files=[("files", ("jwt-note.txt", b"written by a signed-on editor", "text/plain"))],
    )
    assert upload.status_code == 200, upload.text
    not_yet = jwt_issuer.token("early", groups=["raychat-users"], nbf_in=600)
    assert call(models, "GET", not_yet).status_code == 401
