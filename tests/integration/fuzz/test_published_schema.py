"""The published OpenAPI document: every README route, typed JSON bodies; and (a) schemathesis over it."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from tests.conftest import Stack
from tests.integration.fuzz.common import (
    GENERATION_PATHS,
    MODEL,
    RESPONSE_LIMIT_S,
    SCHEMA_BUDGET_S,
    SCHEMA_EXAMPLES,
    SCHEMA_GENERATION_EXAMPLES,
    SEED,
    SESSION_ID,
    SMALL_MAX_TOKENS,
    Budget,
    Sent,
    Stored,
    check_openai_error,
    loopback,
)

pytestmark = pytest.mark.stack


# --- the published schema -----------------------------------------------------------------------------
JSON_BODIES = {
    ("post", "/v1/chat/completions"),
    ("post", "/v1/completions"),
    ("post", "/v1/embeddings"),
    ("post", "/v1/knowledge_bases"),
    ("post", "/v1/knowledge_bases/{name}/search"),
}
README_ROUTES = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{model}"),
    ("get", "/v1/sessions/{session_id}"),
    ("delete", "/v1/sessions/{session_id}"),
    ("get", "/v1/knowledge_bases"),
    ("delete", "/v1/knowledge_bases/{name}"),
    ("get", "/v1/knowledge_bases/{name}/documents"),
    ("post", "/v1/knowledge_bases/{name}/documents"),
    ("get", "/v1/knowledge_bases/{name}/jobs/{job_id}"),
    ("delete", "/v1/knowledge_bases/{name}/documents/{document}"),
    ("get", "/v1/me"),
    ("get", "/v1/sessions"),
    ("get", "/v1/admin/cluster"),
    ("post", "/v1/files"),
    ("get", "/v1/files/{file_id}"),
    ("get", "/v1/files/{file_id}/content"),
    ("get", "/v1/batches/{batch_id}"),
    ("post", "/v1/batches/{batch_id}/cancel"),
    *JSON_BODIES,
}


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow `$ref`s from the document root (OpenAPI's rule: `#/components/schemas/...`)."""
    for _ in range(32):
        if not (isinstance(node, dict) and "$ref" in node):
            return node
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#/"), f"$ref {ref!r} is not local to the document"
        node = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"$ref {ref} points nowhere"
            node = node[part]
    raise AssertionError("$ref cycle")


def test_openapi_publishes_every_route_with_typed_bodies(client: httpx.Client) -> None:
    """What the schemathesis part stands on: every README route, JSON bodies as object schemas."""
    resp = client.get("/openapi.json")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert str(doc.get("openapi", "")).startswith("3."), doc.get("openapi")
    published = {(m, p) for p, ops in doc["paths"].items() for m in ops if m in {"get", "post", "delete"}}
    assert README_ROUTES <= published, f"not published: {sorted(README_ROUTES - published)}"
    for method, path in JSON_BODIES:
        body = doc["paths"][path][method].get("requestBody") or {}
        schema = (body.get("content") or {}).get("application/json", {}).get("schema")
        assert schema, f"{method.upper()} {path}: no application/json request body schema"
        target = resolve(doc, schema)
        assert target.get("type") == "object" and target.get("properties"), (
            f"{method.upper()} {path}: {target}"
        )
    upload = doc["paths"]["/v1/knowledge_bases/{name}/documents"]["post"].get("requestBody") or {}
    assert "multipart/form-data" in (upload.get("content") or {}), "upload: no multipart/form-data body"


# --- (a) schemathesis over the published schema ---------------------------------------------------------
# schemathesis 4.32's pytest integration for a schema that only exists once a fixture ran
# (`schemathesis.pytest.from_fixture(...).parametrize()`) touches `Node._nodeid`, which pytest 9.2 removed. So
# the operations are driven here with the documented `APIOperation.as_strategy()` + Hypothesis, which also
# keeps going after a failing operation and reports every one at the end.
def schemathesis_config(base_url: str, headers: dict[str, str]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "headers": headers,
            "request-timeout": RESPONSE_LIMIT_S,
            "generation": {"database": "none"},
        }
    )


@pytest.fixture(scope="module")
def api_schema(stack: Stack, auth_headers: dict[str, str]) -> Any:
    url = loopback(stack.url)
    schema = schemathesis.openapi.from_url(
        f"{url}/openapi.json", config=schemathesis_config(url, auth_headers), headers=auth_headers, timeout=30
    )
    # DELETE routes would only remove what other tests (or the package's snapshot) stand on.
    return schema.exclude(method="DELETE")


@pytest.fixture(scope="module")
def requests_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment
        yield session


def tame(case: schemathesis.Case, stored: Stored, n: int) -> None:
    """Keep the generated case's fuzz, drop what is costly or unsafe on a real stack: generation capped at
    SMALL_MAX_TOKENS and n=1; no session written; a knowledge base never follows a folder. Every other case
    names the served model and the package's knowledge bases and session (reads; uploads go to scratch)."""
    path, method = case.operation.path, case.method.upper()
    body = case.body
    if path in GENERATION_PATHS and isinstance(body, dict):
        body = dict(body)
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if (key == "max_tokens" and value is None) or (_is_int(value) and value > SMALL_MAX_TOKENS):
                body[key] = SMALL_MAX_TOKENS  # null (or absent) means "up to the context"
        for key, most in (("n", 1), ("best_of", 1), ("min_tokens", 0)):
            if _is_int(body.get(key)) and body[key] > most:
                body[key] = most
        if isinstance(body.get("session_id"), str) and SESSION_ID.match(body["session_id"]):
            del body["session_id"]
        case.body = body
    if case.headers:
        for key in [k for k in case.headers if k.lower() == "x-session-id"]:
            del case.headers[key]
    if path == "/v1/knowledge_bases" and method == "POST" and isinstance(body, dict):
        if isinstance(body.get("source_folder"), str):
            case.body = {k: v for k, v in body.items() if k != "source_folder"}
    if n % 2:
        return
    # Every other case names what exists, so valid cases get past "not found" to the real work.
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        if path in GENERATION_PATHS:
            case.body = {**case.body, "model": MODEL}
        elif path == "/v1/embeddings":
            case.body = {k: v for k, v in case.body.items() if k != "model"}  # the served one
    if case.path_parameters:
        upload = path.endswith("/documents") and method == "POST"
        real = {
            "name": stored.scratch_kb if upload else stored.kb,
            "model": MODEL,
            "session_id": stored.session,
        }
        case.path_parameters = {k: real.get(k, v) for k, v in case.path_parameters.items()}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def answers_in_time(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    assert response.elapsed <= RESPONSE_LIMIT_S, f"answered after {response.elapsed:.1f}s"


def openai_error_format(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    if 400 <= response.status_code < 500:
        check_openai_error(response.status_code, response.content, f"{case.method} {case.formatted_path}")


CHECKS = [not_a_server_error, answers_in_time, openai_error_format]


def test_schemathesis_every_operation(
    api_schema: Any,
    stack: Stack,
    stored: Stored,
    auth_headers: dict[str, str],
    requests_session: requests.Session,
) -> None:
    """Valid and invalid cases for every published operation (DELETE aside), each answer < 500, in time,
    4xx in OpenAI's format. Fixed seed per operation and mode, no example database, no shrinking."""
    base_url = loopback(stack.url)
    budget, sent, failures = Budget(SCHEMA_BUDGET_S), Sent(), []
    operations = []
    for result in api_schema.get_all_operations():
        if hasattr(result, "ok"):
            operations.append(result.ok())
        else:
            failures.append(f"schema error: {result.err()}")
    assert operations, "the published schema has no operations"

    def exercise(operation: Any, mode: schemathesis.GenerationMode, examples: int) -> int:
        count = 0

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=False,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            verbosity=Verbosity.quiet,
        )
        @seed(zlib.crc32(f"{SEED}:{operation.label}:{mode.value}".encode()))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            nonlocal count
            if budget.exhausted():
                return
            count += 1
            tame(case, stored, count)
            if operation.path == "/v1/knowledge_bases" and operation.method.upper() == "POST":
                assert not (isinstance(case.body, dict) and isinstance(case.body.get("source_folder"), str))
            response = case.call(
                base_url=base_url,
                session=requests_session,
                headers=auth_headers,
                timeout=(5, RESPONSE_LIMIT_S),
            )
            sent.statuses[(operation.label, response.status_code)] += 1
            sent.slowest = max(sent.slowest, response.elapsed)
            if operation.path == "/v1/knowledge_bases" and response.status_code == 201:
                name = json.loads(response.content)["name"]
                sent.created_kbs.append(name)
                requests_session.delete(
                    f"{base_url}/v1/knowledge_bases/{quote(name, safe='')}", headers=auth_headers, timeout=30
                )
            case.validate_response(response, checks=CHECKS)

        run()
        return count

    sent_per_operation: Counter[str] = Counter()
    for operation in operations:
        examples = SCHEMA_GENERATION_EXAMPLES if operation.path in GENERATION_PATHS else SCHEMA_EXAMPLES
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                sent_per_operation[operation.label] += exercise(operation, mode, examples)
            except Unsatisfiable:
                continue  # nothing to make invalid (no parameters, no body)
            except Exception as exc:  # every operation runs; all failures are reported together
                failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}")
    print(f"\nschemathesis: {sum(sent_per_operation.values())} cases, {budget.skipped} past the budget")
    print(sent.summary())
    assert not failures, "\n\n".join(failures)
    untried = [op.label for op in operations if not sent_per_operation[op.label]]
    assert not untried or budget.skipped, f"no case was sent to {untried}"
