"""(d) Requests aimed at the stored state are refused, and a refused request changes nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.integration.fuzz.bodies import chat_base
from tests.integration.fuzz.common import SEED, SESSION_EXAMPLES, Sender, Sent, Stored, snapshot
from tests.integration.fuzz.hostile import LONE
from tests.integration.fuzz.refusal_cases import REFUSAL_LABELS, refusals

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def refusal_run(client: httpx.Client) -> Iterator[Sender]:
    sent = Sent()
    yield Sender(client, sent)
    print(f"\nrefused requests against stored state:\n{sent.summary()}")


def _refused(resp: httpx.Response) -> bool:
    """Refused: a 4xx; or an upload answered 200 whose every file failed (one corrupt file fails alone)."""
    if 400 <= resp.status_code < 500:
        return True
    if resp.status_code == 200 and resp.request.url.path.endswith("/documents"):
        return all(item.get("status") == "failed" for item in resp.json().get("data", []))
    return False


@pytest.mark.parametrize("label", REFUSAL_LABELS)
def test_request_against_stored_state_is_refused(refusal_run: Sender, stored: Stored, label: str) -> None:
    _, method, path, content, headers = next(r for r in refusals(stored) if r[0] == label)
    resp = refusal_run(method, path, content, headers, route=label, follow_redirects=False)
    assert _refused(resp), f"{label}: expected a refusal, got {resp.status_code} {resp.text[:300]}"


@settings(
    max_examples=SESSION_EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
@seed(SEED)
@given(
    before=st.text(max_size=20),
    lone=LONE,
    after=st.text(max_size=20),
    where=st.sampled_from(["content", "name", "role", "model", "stop"]),
    stream=st.booleans(),
    by_header=st.booleans(),
)
def test_session_chat_with_lone_surrogate_is_refused(
    refusal_run: Sender,
    stored: Stored,
    before: str,
    lone: str,
    after: str,
    where: str,
    stream: bool,
    by_header: bool,
) -> None:
    """Wherever a lone surrogate sits in a chat on the stored session, it is a 400 that stores nothing."""
    message: dict[str, Any] = {"role": "user", "content": "hello"}
    obj: dict[str, Any] = {**chat_base(), "messages": [message], "stream": stream}
    text = before + lone + after
    if where in ("content", "name", "role"):
        message[where] = text
    else:
        obj[where] = text
    headers = {"Content-Type": "application/json"}
    if by_header:
        headers["X-Session-ID"] = stored.session
    else:
        obj["session_id"] = stored.session
    resp = refusal_run(
        "POST", "/v1/chat/completions", json.dumps(obj).encode(), headers, route=f"session/{where}"
    )
    assert resp.status_code == 400, resp.text[:300]


# Judges everything the package sent (conftest.py runs it after every test not marked so).
@pytest.mark.fuzz_afterwards(1)
def test_refused_requests_changed_nothing_stored(client: httpx.Client, stored: Stored) -> None:
    after = snapshot(client, stored)
    assert after["session"] == stored.before["session"], "a refused chat changed the stored session"
    assert after["documents"] == stored.before["documents"], (
        "a refused request changed the knowledge base's documents"
    )
    assert after["knowledge_bases"] == stored.before["knowledge_bases"], (
        "a refused request changed the knowledge bases"
    )
