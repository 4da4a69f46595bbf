"""Conversations kept in Redis, with a per-replica LRU of hot contexts in front.

Redis holds, per session, the message list and a version that every change increments in the same
MULTI/EXEC transaction. A replica's LRU entry remembers the version it was read at; before using it the
replica reads the version (one small GET) and refetches when another replica has moved the session on,
so the LRU saves the list transfer, never correctness. Deleting a session empties its list and still
bumps the version (never resets it), so an old LRU entry can never match a restarted session.

Every session belongs to the identity that created it: its keys carry the owner's hashed identity, so
another identity asking for the same `session_id` finds nothing (404) and starts a conversation of its own.
Each owner also has an index of its sessions (a sorted set by last turn, and a title per session: its
first question) so that `GET /v1/sessions` lists them without scanning Redis; it expires with them.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployments.config import SessionSettings
from deployments.gateway.protocol import check_session_id  # noqa: F401  (sessions' id rule, re-exported)
from deployments.gateway.redis_state import RedisState

Message = dict[str, Any]


class SessionStore:
    def __init__(
        self, redis: RedisState, settings: SessionSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.redis = redis
        self.settings = settings
        self._clock = clock
        self._lru: OrderedDict[str, tuple[int, float, list[Message]]] = OrderedDict()
        self.lru_hits = 0
        self.lru_misses = 0

    def _keys(self, owner: str, session_id: str) -> tuple[str, str]:
        return (
            self.redis.key("session", owner, session_id, "messages"),
            self.redis.key("session", owner, session_id, "v"),
        )

    def _remember(self, session_id: str, version: int, messages: list[Message]) -> None:
        if self.settings.lru_size == 0:
            return
        self._lru[session_id] = (version, self._clock(), messages)
        self._lru.move_to_end(session_id)
        while len(self._lru) > self.settings.lru_size:
            self._lru.popitem(last=False)

    async def load(self, owner: str, session_id: str) -> list[Message]:
        """The session's messages (oldest first); [] for a new session."""
        messages_key, version_key = self._keys(owner, session_id)
        lru_key = f"{owner}:{session_id}"
        raw_version = await self.redis.run(lambda c: c.get(version_key))
        if raw_version is None:  # new (or expired): version 0, so our own first append extends it
            self._remember(lru_key, 0, [])
            return []
        cached = self._lru.get(lru_key)
        # An entry not validated for a whole TTL may belong to a session that expired meanwhile.
        if cached and cached[0] == int(raw_version) and self._clock() - cached[1] < self.settings.ttl_s:
            self.lru_hits += 1
            self._remember(lru_key, cached[0], cached[2])
            return list(cached[2])
        self.lru_misses += 1

        async def read(client: Any) -> list[Any]:
            async with client.pipeline(transaction=True) as pipe:
                pipe.get(version_key)
                pipe.lrange(messages_key, 0, -1)
                return await pipe.execute()

        version, items = await self.redis.run(read)
        messages = [json.loads(item) for item in items]
        if version is not None:
            self._remember(lru_key, int(version), messages)
        return list(messages)

    def _index_keys(self, owner: str, session_id: str) -> tuple[str, str]:
        return self.redis.key("sessions", owner), self.redis.key("session", owner, session_id, "title")

    async def append(self, owner: str, session_id: str, messages: list[Message]) -> int:
        """Adds one turn's messages; returns the session's new version."""
        if not messages:
            return 0
        messages_key, version_key = self._keys(owner, session_id)
        index_key, title_key = self._index_keys(owner, session_id)
        lru_key = f"{owner}:{session_id}"
        ttl, keep = self.settings.ttl_s, self.settings.max_stored_messages
        encoded = [json.dumps(m, ensure_ascii=False) for m in messages]
        title = title_of(messages, self.settings.title_chars)
        now = time.time()

        async def write(client: Any) -> list[Any]:
            async with client.pipeline(transaction=True) as pipe:
                pipe.rpush(messages_key, *encoded)
                pipe.ltrim(messages_key, -keep, -1)
                pipe.incr(version_key)
                pipe.expire(messages_key, ttl)
                pipe.expire(version_key, ttl)
                pipe.zadd(index_key, {session_id: now})
                pipe.zremrangebyscore(index_key, "-inf", now - ttl)  # sessions expired meanwhile
                pipe.expire(index_key, ttl)
                pipe.set(title_key, title, nx=True, ex=ttl)
                pipe.expire(title_key, ttl)
                return await pipe.execute()

        version = int((await self.redis.run(write))[2])
        cached = self._lru.get(lru_key)
        if cached and cached[0] == version - 1:  # nobody else wrote in between: extend in place
            self._remember(lru_key, version, (cached[2] + messages)[-keep:])
        else:
            self._lru.pop(lru_key, None)
        return version

    async def messages(self, owner: str, session_id: str) -> list[Message] | None:
        """What `GET /v1/sessions/{id}` shows, read from Redis itself; None when there is no session."""
        messages_key, _ = self._keys(owner, session_id)
        items = await self.redis.run(lambda c: c.lrange(messages_key, 0, -1))
        return [json.loads(item) for item in items] if items else None

    async def delete(self, owner: str, session_id: str) -> bool:
        messages_key, version_key = self._keys(owner, session_id)
        index_key, title_key = self._index_keys(owner, session_id)

        async def drop(client: Any) -> list[Any]:
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(messages_key)
                pipe.incr(version_key)
                pipe.expire(version_key, self.settings.ttl_s)
                pipe.zrem(index_key, session_id)
                pipe.delete(title_key)
                return await pipe.execute()

        existed = bool((await self.redis.run(drop))[0])
        self._lru.pop(f"{owner}:{session_id}", None)
        return existed

    async def listed(self, owner: str, limit: int) -> list[dict[str, Any]]:
        """The owner's sessions, the most recent turn first: id, title, last turn (unix s), messages."""
        index_key = self.redis.key("sessions", owner)
        newest = time.time()
        ids = await self.redis.run(
            lambda c: c.zrevrangebyscore(
                index_key, "+inf", newest - self.settings.ttl_s, start=0, num=limit, withscores=True
            )
        )
        if not ids:
            return []

        async def details(client: Any) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for session_id, _ in ids:
                    pipe.get(self._index_keys(owner, session_id)[1])
                    pipe.llen(self._keys(owner, session_id)[0])
                return await pipe.execute()

        found = await self.redis.run(details)
        return [
            {
                "id": sid,
                "object": "session",
                "title": found[2 * i] or sid,
                "updated_at": score,
                "messages": int(found[2 * i + 1]),
            }
            for i, (sid, score) in enumerate(ids)
            if found[2 * i + 1]  # a session whose messages expired is not listed
        ]


def title_of(messages: list[Message], chars: int) -> str:
    """A session's title: its first question, on one line, cut to `chars`."""
    for message in messages:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and content.strip():
            line = " ".join(content.split())
            return line if len(line) <= chars else line[: chars - 1] + "…"
    return ""


# --- the context window ----------------------------------------------------------------------------
class TokenCounter:
    """Counts a message's tokens with the served model's own tokenizer (plus the chat template's
    per-message overhead), so the history is trimmed to what the engine will accept."""

    def __init__(self, model_path: Path, overhead: int) -> None:
        fast = Path(model_path) / "tokenizer.json"
        if fast.is_file():  # the light `tokenizers` library: no transformers import in the gateway
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(fast))
            self._encode: Callable[[str], int] = lambda text: len(
                tokenizer.encode(text, add_special_tokens=False).ids
            )
        else:
            from transformers import AutoTokenizer

            slow = AutoTokenizer.from_pretrained(str(model_path))
            self._encode = lambda text: len(slow.encode(text, add_special_tokens=False))
        self.overhead = overhead

    def __call__(self, message: Message) -> int:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return self._encode(content if isinstance(content, str) else "") + self.overhead


def turns(messages: list[Message]) -> list[list[Message]]:
    """Groups messages into turns, each starting at a user message."""
    grouped: list[list[Message]] = []
    for message in messages:
        if message.get("role") == "user" or not grouped:
            grouped.append([message])
        else:
            grouped[-1].append(message)
    return grouped


def fit_history(
    history: list[Message], new: list[Message], *, budget: int, count: Callable[[Message], int]
) -> list[Message]:
    """The newest whole turns of `history` that fit in `budget` tokens beside `new`; oldest go first."""
    total = sum(count(m) for m in new)
    kept: list[list[Message]] = []
    for turn in reversed(turns(history)):
        size = sum(count(m) for m in turn)
        if total + size > budget:
            break
        kept.append(turn)
        total += size
    return [m for turn in reversed(kept) for m in turn]


def with_history(request_messages: list[Message], history: list[Message]) -> list[Message]:
    """The request's system messages, then the stored history, then the request's own turn."""
    system = [m for m in request_messages if m.get("role") == "system"]
    own = [m for m in request_messages if m.get("role") != "system"]
    return [*system, *history, *own]


def turn_to_store(request_messages: list[Message], answer: str) -> list[Message]:
    """What a finished turn adds to the session: the caller's non-system messages and the answer."""
    own = [
        {"role": m["role"], "content": m.get("content")}
        for m in request_messages
        if m.get("role") != "system"
    ]
    return [*own, {"role": "assistant", "content": answer}]
