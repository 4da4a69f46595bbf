"""Valid base bodies of the JSON routes, where their strings and numbers live, and the byte-level
surgery that puts a hostile token (raw JSON text, not a Python value) into one of them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tests.integration.fuzz.common import MODEL, SMALL_MAX_TOKENS

MARK = "@@HOSTILE@@"


def raw(obj: dict[str, Any], text_at: str) -> bytes:
    """JSON for `obj` whose string "@" is replaced by the raw escape text `text_at` (e.g. `\\ud800`)."""
    return json.dumps(obj).replace('"@"', f'"{text_at}"').encode()


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    base: Callable[[], dict[str, Any]]
    texts: list[tuple[Any, ...]]  # where a string lives
    numbers: list[tuple[Any, ...]]  # where a number lives

    def __repr__(self) -> str:
        return self.name


def chat_base() -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": SMALL_MAX_TOKENS,
        "cache": False,
    }


ENDPOINTS = [
    Endpoint(
        "chat",
        "/v1/chat/completions",
        chat_base,
        [
            ("messages", 0, "content"),
            ("messages", 0, "role"),
            ("messages", 0, "name"),
            ("model",),
            ("user",),
            ("stop",),
            ("session_id",),
            ("knowledge_base",),
            ("search_mode",),
            ("messages", 0, "content", 0, "text"),
        ],
        [
            ("max_tokens",),
            ("temperature",),
            ("top_p",),
            ("n",),
            ("seed",),
            ("presence_penalty",),
            ("top_k",),
            ("max_completion_tokens",),
        ],
    ),
    Endpoint(
        "completion",
        "/v1/completions",
        lambda: {"model": MODEL, "prompt": "hi", "max_tokens": SMALL_MAX_TOKENS, "cache": False},
        [("prompt",), ("prompt", 1), ("model",), ("user",), ("stop",)],
        [("max_tokens",), ("temperature",), ("n",), ("seed",), ("prompt", 0), ("logprobs",)],
    ),
    Endpoint(
        "embeddings",
        "/v1/embeddings",
        lambda: {"input": "hello"},
        [("input",), ("input", 1), ("model",), ("user",)],
        [("input", 0), ("dimensions",)],
    ),
    Endpoint(
        "kb-create",
        "/v1/knowledge_bases",
        lambda: {"name": f"fz-{uuid.uuid4().hex[:8]}", "description": "fuzz"},
        [("name",), ("description",)],
        [("description",)],
    ),
    Endpoint(
        "search",
        "/v1/knowledge_bases/{kb}/search",
        lambda: {"query": "pump", "top_k": 2, "mode": "hybrid"},
        [("query",), ("mode",), ("filter", "document"), ("filter", "x' OR 1=1 --")],
        [("top_k",), ("score_threshold",)],
    ),
]


def put(obj: Any, slot: tuple[Any, ...], value: Any) -> Any:
    """`obj` with `value` at `slot`, building lists and objects on the way (an int step makes a list)."""
    if not slot:
        return value
    head, rest = slot[0], slot[1:]
    if isinstance(head, int):
        items = list(obj) if isinstance(obj, list) else ([obj] if obj is not None else [])
        while len(items) <= head:
            items.append("x")
        items[head] = put(items[head], rest, value)
        return items
    mapping = dict(obj) if isinstance(obj, dict) else {}
    mapping[head] = put(mapping.get(head), rest, value)
    return mapping


def with_token(base: dict[str, Any], slot: tuple[Any, ...], token: bytes) -> bytes:
    """The base body as JSON with the raw bytes `token` as the value at `slot`."""
    return json.dumps(put(base, slot, MARK)).encode().replace(f'"{MARK}"'.encode(), token, 1)


def text_token(text: str, ascii_only: bool) -> bytes:
    # ensure_ascii: lone surrogates become the raw escapes `\ud800`; otherwise their bytes go out as they
    # are (surrogatepass: ED A0 80, which is not UTF-8).
    return json.dumps(text, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def nested(depth: int, kind: str) -> bytes:
    return b"[" * depth + b"]" * depth if kind == "array" else b'{"a":' * depth + b"0" + b"}" * depth


def form(base: dict[str, Any]) -> bytes:
    return urlencode({k: json.dumps(v) if not isinstance(v, str) else v for k, v in base.items()}).encode()


def multipart(base: dict[str, Any], boundary: str = "fuzz") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{json.dumps(v)}\r\n'.encode()
        for k, v in base.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()
