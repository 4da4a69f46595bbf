"""(b) Hostile bodies against the JSON routes, fixed and Hypothesis-built: every answer < 500, in time, and
every 4xx in OpenAI's error format; and the issue's lone surrogate, a 400 on every JSON route."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.integration.fuzz.bodies import ENDPOINTS, raw
from tests.integration.fuzz.common import (
    GENERATION_PATHS,
    HOSTILE_BUDGET_S,
    HOSTILE_EXAMPLES,
    MODEL,
    SEED,
    SMALL_MAX_TOKENS,
    Budget,
    Sender,
    Sent,
    Stored,
    check_openai_error,
    describe,
)
from tests.integration.fuzz.hostile import hostile_requests
from tests.integration.fuzz.hostile_cases import FIXED_HOSTILE, SURROGATE_CASES

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def hostile_run(client: httpx.Client) -> Iterator[tuple[Budget, Sender]]:
    sent = Sent()
    budget = Budget(HOSTILE_BUDGET_S)
    yield budget, Sender(client, sent)
    print(
        f"\nhostile bodies: {budget.skipped} past the budget, KBs created (and deleted): {sent.created_kbs}"
    )
    print(sent.summary())


# --- explicit regressions: the lone surrogate ------------------------------------------------------
@pytest.mark.parametrize("escape", ["\\ud800", "x\\udfffy", "\\udc00\\ud800", "ok \\udbff"])
@pytest.mark.parametrize(("name", "path", "body"), SURROGATE_CASES, ids=[c[0] for c in SURROGATE_CASES])
def test_lone_surrogate_is_400(
    client: httpx.Client,
    stored: Stored,
    name: str,
    path: str,
    body: Callable[[Stored], dict[str, Any]],
    escape: str,
) -> None:
    obj = {**body(stored), "max_tokens": SMALL_MAX_TOKENS} if path in GENERATION_PATHS else body(stored)
    content = raw(obj, escape)
    resp = client.post(
        path.format(kb=stored.kb), content=content, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400, f"{describe('POST', path, content)}: {resp.status_code} {resp.text[:300]}"
    check_openai_error(400, resp.content, name)


def test_escaped_surrogate_pair_is_fine(client: httpx.Client) -> None:
    """The control: a valid pair (U+1F600 as `\\ud83d\\ude00`) is text, not an error."""
    obj = {"model": MODEL, "messages": [{"role": "user", "content": "@"}], "max_tokens": SMALL_MAX_TOKENS}
    resp = client.post(
        "/v1/chat/completions",
        content=raw(obj, "smile \\ud83d\\ude00"),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text


# --- fixed and generated hostile bodies --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("label", "endpoint", "body", "content_type"), FIXED_HOSTILE, ids=[c[0] for c in FIXED_HOSTILE]
)
def test_hostile_body_is_not_a_server_error(
    hostile_run: tuple[Budget, Sender],
    stored: Stored,
    label: str,
    endpoint: str,
    body: Callable[[], bytes],
    content_type: str | None,
) -> None:
    _, send = hostile_run
    ep = next(e for e in ENDPOINTS if e.name == endpoint)
    headers = {"Content-Type": content_type} if content_type else {}
    send("POST", ep.path.format(kb=stored.kb), body(), headers, route=f"{ep.name}/{label}")


@settings(
    max_examples=HOSTILE_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
@seed(SEED)
@given(data=st.data())
def test_hostile_bodies_fuzzed(
    hostile_run: tuple[Budget, Sender], stored: Stored, data: st.DataObject
) -> None:
    budget, send = hostile_run
    req = data.draw(hostile_requests(), label="request")
    if budget.exhausted():
        return
    headers = {"Content-Type": req.content_type} if req.content_type else {}
    send(
        "POST",
        req.endpoint.path.format(kb=stored.kb),
        req.content,
        headers,
        route=f"{req.endpoint.name}/{req.kind}",
    )
