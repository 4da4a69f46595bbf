"""The question cache: answers to repeated deterministic requests, kept in Redis for `cache.ttl_s`.

The key is a digest of everything that decides the answer: endpoint, model, the messages (whitespace
normalised), every sampling parameter, whether it streams, and for a knowledge-base chat the knowledge
base, its retrieval options and its version. Any change to a knowledge base bumps that version, so its old
entries can no longer be reached and simply expire. A streamed answer is kept as its SSE events and
replayed as they were (only a stream that ended cleanly is kept: `sse.StreamSummary.complete`). Every Redis
failure here is a miss: no request fails because of the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from deployments.config import CacheSettings
from deployments.gateway.redis_state import RedisState, RedisUnavailable

log = logging.getLogger("raychat.cache")
# Fields that do not change what the model says.
_NOT_IN_KEY = {"messages", "prompt", "stream_options", "user", "session_id", "cache"}
_SPACE = re.compile(r"\s+")


def _normalise(text: Any) -> Any:
    return _SPACE.sub(" ", text).strip() if isinstance(text, str) else text


def cache_key(endpoint: str, body: dict[str, Any], retrieval: dict[str, Any] | None = None) -> str:
    messages = [
        {k: _normalise(v) for k, v in sorted(m.items())} if isinstance(m, dict) else m
        for m in body.get("messages") or []
    ]
    prompt = body.get("prompt")
    prompt = [_normalise(p) for p in prompt] if isinstance(prompt, list) else _normalise(prompt)
    material = {
        "endpoint": endpoint,
        "messages": messages,
        "prompt": prompt,
        "params": {k: v for k, v in sorted(body.items()) if k not in _NOT_IN_KEY},
        "retrieval": retrieval,
    }
    encoded = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


class QuestionCache:
    """Entries live under the model's version: after an upgrade to other weights or engine options, no
    answer the previous model generated is served as the new one's (both colours share Redis)."""

    def __init__(self, redis: RedisState, settings: CacheSettings, model_version: str = "") -> None:
        self.redis = redis
        self.settings = settings
        self.model_version = model_version

    def _key(self, key: str) -> str:
        return self.redis.key("answer", self.model_version, key)

    async def get(self, key: str) -> dict[str, Any] | None:
        """{"kind": "json", "body": ...} or {"kind": "sse", "events": "..."}; None on a miss or outage."""
        if not self.settings.enabled:
            return None
        try:
            raw = await self.redis.run(lambda c: c.get(self._key(key)))
        except RedisUnavailable:
            return None
        return json.loads(raw) if raw else None

    async def put(self, key: str, entry: dict[str, Any]) -> bool:
        if not self.settings.enabled:
            return False
        encoded = json.dumps(entry, ensure_ascii=False)
        if len(encoded.encode()) > self.settings.max_entry_bytes:
            return False
        try:
            await self.redis.run(lambda c: c.set(self._key(key), encoded, ex=self.settings.ttl_s))
        except RedisUnavailable:
            return False
        return True
