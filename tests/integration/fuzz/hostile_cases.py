"""Fixed hostile requests: each kind of hostile body at least once, and the lone-surrogate regressions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from tests.integration.fuzz.bodies import chat_base, form, multipart, nested, text_token, with_token
from tests.integration.fuzz.common import MODEL, ONE_MB, SMALL_MAX_TOKENS, Stored

SURROGATE_CASES: list[tuple[str, str, Callable[[Stored], dict[str, Any]]]] = [
    (
        "chat",
        "/v1/chat/completions",
        lambda s: {"model": MODEL, "messages": [{"role": "user", "content": "@"}]},
    ),
    (
        "chat-stream",
        "/v1/chat/completions",
        lambda s: {"model": MODEL, "messages": [{"role": "user", "content": "@"}], "stream": True},
    ),
    (
        "chat-session",
        "/v1/chat/completions",
        lambda s: {"model": MODEL, "messages": [{"role": "user", "content": "@"}], "session_id": s.session},
    ),
    ("completion", "/v1/completions", lambda s: {"model": MODEL, "prompt": "@"}),
    ("completion-stream", "/v1/completions", lambda s: {"model": MODEL, "prompt": "@", "stream": True}),
    ("completion-list", "/v1/completions", lambda s: {"model": MODEL, "prompt": ["ok", "@"]}),
    ("embeddings", "/v1/embeddings", lambda s: {"input": "@"}),
    (
        "kb-create",
        "/v1/knowledge_bases",
        lambda s: {"name": f"fz-{uuid.uuid4().hex[:6]}", "description": "@"},
    ),
    ("search", "/v1/knowledge_bases/{kb}/search", lambda s: {"query": "@"}),
]


JSON_TYPE = "application/json"
CHAT_CONTENT = ("messages", 0, "content")


def _chat_token(slot: tuple[Any, ...], token: bytes) -> bytes:
    return with_token(chat_base(), slot, token)


def _completion(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "x", "max_tokens": SMALL_MAX_TOKENS, **extra}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# (label, endpoint, body builder, content type): each kind the issue names at least once, whatever the
# random part draws. Builders, so that the 1 MB and 100000-deep bodies exist only while they are sent.
FIXED_HOSTILE: list[tuple[str, str, Callable[[], bytes], str | None]] = [
    ("empty", "chat", lambda: b"", JSON_TYPE),
    ("empty-no-type", "completion", lambda: b"", None),
    ("nul-body", "chat", lambda: b"\x00", JSON_TYPE),
    ("nul-escape-in-content", "chat", lambda: _chat_token(CHAT_CONTENT, b'"a\\u0000b"'), None),
    ("raw-nul-in-string", "chat", lambda: _chat_token(CHAT_CONTENT, b'"a\x00b"'), None),
    ("1mb-content", "chat", lambda: _chat_token(CHAT_CONTENT, text_token("a" * ONE_MB, True)), None),
    ("1mb-prompt", "completion", lambda: _dumps(_completion(prompt="word " * (ONE_MB // 5))), None),
    ("1mb-embedding", "embeddings", lambda: _dumps({"input": "a" * ONE_MB}), None),
    ("1mb-query", "search", lambda: _dumps({"query": "pump " * (ONE_MB // 5)}), None),
    ("1mb-kb-name", "kb-create", lambda: _dumps({"name": "a" * ONE_MB}), None),
    (
        "1mb-surrogates",
        "chat",
        lambda: _chat_token(CHAT_CONTENT, b'"' + b"\\ud800" * (ONE_MB // 6) + b'"'),
        None,
    ),
    ("deep-array", "chat", lambda: nested(100_000, "array"), JSON_TYPE),
    ("deep-object", "completion", lambda: nested(100_000, "object"), JSON_TYPE),
    (
        "deep-in-field",
        "embeddings",
        lambda: with_token({"input": "x"}, ("input",), nested(100_000, "array")),
        None,
    ),
    ("deep-65", "search", lambda: with_token({"query": "x"}, ("filter",), nested(65, "object")), None),
    ("huge-int", "chat", lambda: _chat_token(("max_tokens",), b"1" + b"0" * 400), None),
    ("huge-neg-int", "completion", lambda: with_token(_completion(), ("seed",), b"-1" + b"0" * 400), None),
    ("int-past-str-limit", "chat", lambda: _chat_token(("seed",), b"1" + b"0" * 5000), None),
    ("float-overflow", "chat", lambda: _chat_token(("temperature",), b"1e400"), None),
    ("nan", "chat", lambda: _chat_token(("temperature",), b"NaN"), None),
    ("infinity", "completion", lambda: with_token(_completion(), ("top_p",), b"Infinity"), None),
    ("neg-infinity", "search", lambda: with_token({"query": "x"}, ("score_threshold",), b"-Infinity"), None),
    ("token-id-out-of-vocab", "completion", lambda: _dumps(_completion(prompt=[10**9])), None),
    ("token-id-negative", "completion", lambda: _dumps(_completion(prompt=[-1])), None),
    ("text-plain", "chat", lambda: _dumps(chat_base()), "text/plain"),
    ("form-encoded", "chat", lambda: form(chat_base()), "application/x-www-form-urlencoded"),
    ("multipart", "completion", lambda: multipart(_completion()), "multipart/form-data; boundary=fuzz"),
    ("multipart-no-boundary", "embeddings", lambda: multipart({"input": "x"}), "multipart/form-data"),
    ("no-content-type", "search", lambda: _dumps({"query": "pump"}), None),
    (
        "duplicate-keys",
        "chat",
        lambda: (
            b'{"model": "x", "model": "%s", "messages": [], "messages": [{"role": "user", "content": "hi"}], '
            b'"max_tokens": 4}' % MODEL.encode()
        ),
        None,
    ),
    (
        "duplicate-surrogate-last",
        "completion",
        lambda: b'{"prompt": "x", "prompt": "\\ud800", "max_tokens": 4}',
        None,
    ),
    ("invalid-utf8", "chat", lambda: _chat_token(CHAT_CONTENT, b'"\xff\xfe"'), None),
    ("cesu-surrogate-bytes", "completion", lambda: b'{"prompt": "\xed\xa0\x80", "max_tokens": 4}', None),
    (
        "utf16-body",
        "embeddings",
        lambda: _dumps({"input": "x"}).decode().encode("utf-16"),
        "application/json; charset=utf-16",
    ),
    ("truncated", "chat", lambda: _dumps(chat_base())[:-7], None),
    ("not-an-object", "kb-create", lambda: b'["name"]', None),
    ("surrogate-key", "search", lambda: b'{"query": "x", "\\ud800": 1}', None),
]
