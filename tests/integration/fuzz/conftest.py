"""The fuzz package's fixtures: one client, one set of credentials and one stored state for all its modules.

pytest runs the package's files in name order; `fuzz_afterwards` tests run after all the others whatever
their file is called, because they judge what the others sent (see `pytest_collection_modifyitems`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.fuzz.common import (
    KB_DOC,
    KB_TEXT,
    MODEL,
    SMALL_MAX_TOKENS,
    TIMEOUT,
    Stored,
    loopback,
    snapshot,
)

HERE = Path(__file__).parent
AFTERWARDS = "fuzz_afterwards"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{AFTERWARDS}(rank): runs after every other test of tests/integration/fuzz, lowest rank first",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `fuzz_afterwards` tests run after the package's other tests (by rank, otherwise in collected
    order): the stored-state comparison and the health check judge everything sent before them. Only the
    package's own items move, among the places they already hold in the run."""
    slots = [i for i, item in enumerate(items) if HERE in item.path.parents]
    ours = sorted((items[i] for i in slots), key=_afterwards_rank)
    for i, item in zip(slots, ours, strict=True):
        items[i] = item


def _afterwards_rank(item: pytest.Item) -> int:
    marker = item.get_closest_marker(AFTERWARDS)
    return int(marker.args[0]) if marker else 0


@pytest.fixture(scope="package")
def auth_headers(stack: Stack) -> dict[str, str]:
    """The one place the fuzzer's credentials come from (schema download, schemathesis and httpx alike):
    the admin key, so every hostile request gets past authentication to the code it is aimed at."""
    return stack.headers


@pytest.fixture(scope="package")
def client(stack: Stack, auth_headers: dict[str, str]) -> Iterator[httpx.Client]:
    # trust_env=False: no proxy from the environment stands between the test and the loopback stack.
    with httpx.Client(
        base_url=loopback(stack.url), headers=auth_headers, timeout=TIMEOUT, trust_env=False
    ) as http:
        yield http


@pytest.fixture(scope="package", autouse=True)
def stored(stack: Stack, client: httpx.Client) -> Iterator[Stored]:
    """Created, and snapshotted, before this package sends anything hostile; removed at the end."""
    run = uuid.uuid4().hex[:6]
    state = Stored(kb=f"fuzz-{run}", scratch_kb=f"fuzz-scratch-{run}", session=f"fuzz-session-{run}")
    for name in (state.kb, state.scratch_kb):
        created = client.post("/v1/knowledge_bases", json={"name": name, "description": "fuzz target"})
        assert created.status_code == 201, created.text
    upload = client.post(
        f"/v1/knowledge_bases/{state.kb}/documents",
        files=[("files", (KB_DOC, KB_TEXT.encode(), "text/plain"))],
        timeout=300,
    )
    assert upload.status_code == 200 and upload.json()["data"][0]["status"] == "ingested", upload.text
    turn = client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": SMALL_MAX_TOKENS,
            "session_id": state.session,
            "cache": False,
        },
    )
    assert turn.status_code == 200, turn.text
    state.before = snapshot(client, state)
    assert len(state.before["session"]) == 2 and [d["document"] for d in state.before["documents"]] == [
        KB_DOC
    ]
    yield state
    for name in (state.kb, state.scratch_kb):
        client.delete(f"/v1/knowledge_bases/{name}")
    client.delete(f"/v1/sessions/{state.session}")
