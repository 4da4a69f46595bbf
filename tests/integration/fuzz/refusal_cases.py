"""Requests aimed at the stored state (its session, knowledge base and documents) that must be refused."""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from tests.integration.fuzz.bodies import chat_base, form, nested, raw, with_token
from tests.integration.fuzz.common import KB_DOC, KB_TEXT, Stored


def _chat_with(session: str, obj_extra: dict[str, Any] | None = None, escape: str | None = None) -> bytes:
    obj = {**chat_base(), "session_id": session, **(obj_extra or {})}
    return raw(obj, escape) if escape else json.dumps(obj).encode()


def _upload(files: list[tuple[str, bytes, str]], field_name: str = "files") -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://127.0.0.1/", files=[(field_name, (n, data, t)) for n, data, t in files]
    )
    return request.read(), request.headers["Content-Type"]


def refusals(stored: Stored) -> list[tuple[str, str, str, bytes | None, dict[str, str]]]:
    return _refusals_for(stored.kb, stored.session)


@functools.lru_cache(maxsize=2)
def _refusals_for(kb: str, session: str) -> list[tuple[str, str, str, bytes | None, dict[str, str]]]:
    """(label, method, path, content, headers): every one must be refused, and refused without effect."""
    JSON = {"Content-Type": "application/json"}
    chat = "/v1/chat/completions"
    kb_docs = f"/v1/knowledge_bases/{kb}/documents"
    msgs = [{"role": "user", "content": "@"}]
    pdf, pdf_type = _upload([("manual.pdf", b"%PDF-1.7 not really a pdf \x00\xff", "application/pdf")])
    docx, docx_type = _upload([("manual.docx", b"PK\x03\x04 truncated zip", "application/octet-stream")])
    exe, exe_type = _upload([("tool.exe", b"MZ\x90\x00", "application/octet-stream")])
    noext, noext_type = _upload([("README", b"text without a type", "text/plain")])
    sneaky, sneaky_type = _upload([("note.txt.exe", KB_TEXT.encode(), "application/octet-stream")])
    wrong_field, wrong_field_type = _upload([(KB_DOC, b"replaced!", "text/plain")], field_name="file")
    many, many_type = _upload([(f"f{i}.exe", b"x", "application/octet-stream") for i in range(1001)])
    return [
        # the session: a lone surrogate, bad numbers, broken JSON, unknown model or knowledge base, too long
        ("session-surrogate", "POST", chat, _chat_with(session, {"messages": msgs}, "\\ud800"), JSON),
        (
            "session-surrogate-stream",
            "POST",
            chat,
            _chat_with(session, {"messages": msgs, "stream": True}, "a\\udfff"),
            JSON,
        ),
        (
            "session-surrogate-2nd-message",
            "POST",
            chat,
            _chat_with(
                session,
                {
                    "messages": [
                        {"role": "user", "content": "fine"},
                        {"role": "assistant", "content": "@"},
                        {"role": "user", "content": "again"},
                    ]
                },
                "\\udc00",
            ),
            JSON,
        ),
        (
            "session-header-surrogate",
            "POST",
            chat,
            raw({**chat_base(), "messages": msgs}, "\\ud800"),
            {**JSON, "X-Session-ID": session},
        ),
        (
            "session-nan",
            "POST",
            chat,
            with_token(json.loads(_chat_with(session)), ("temperature",), b"NaN"),
            JSON,
        ),
        (
            "session-inf",
            "POST",
            chat,
            with_token(json.loads(_chat_with(session)), ("temperature",), b"1e400"),
            JSON,
        ),
        (
            "session-huge-int",
            "POST",
            chat,
            with_token(json.loads(_chat_with(session)), ("seed",), b"1" + b"0" * 400),
            JSON,
        ),
        (
            "session-deep",
            "POST",
            chat,
            with_token(json.loads(_chat_with(session)), ("user",), nested(100_000, "array")),
            JSON,
        ),
        ("session-truncated", "POST", chat, _chat_with(session)[:-3], JSON),
        (
            "session-invalid-utf8",
            "POST",
            chat,
            with_token(json.loads(_chat_with(session)), ("messages", 0, "content"), b'"\xed\xa0\x80"'),
            JSON,
        ),
        (
            "session-form",
            "POST",
            chat,
            form(json.loads(_chat_with(session))),
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        ("session-bad-temperature", "POST", chat, _chat_with(session, {"temperature": 5}), JSON),
        ("session-zero-max-tokens", "POST", chat, _chat_with(session, {"max_tokens": 0}), JSON),
        (
            "session-bad-role",
            "POST",
            chat,
            _chat_with(session, {"messages": [{"role": "robot", "content": "x"}]}),
            JSON,
        ),
        ("session-unknown-model", "POST", chat, _chat_with(session, {"model": "gpt-404"}), JSON),
        (
            "session-unknown-kb",
            "POST",
            chat,
            _chat_with(session, {"knowledge_base": f"none-{uuid.uuid4().hex[:6]}"}),
            JSON,
        ),
        (
            "session-too-long",
            "POST",
            chat,
            _chat_with(session, {"messages": [{"role": "user", "content": " ".join(["word"] * 3000)}]}),
            JSON,
        ),
        (
            "session-duplicate-both-bad",
            "POST",
            chat,
            b'{"session_id": "'
            + session.encode()
            + b'", "messages": "\\ud800", "messages": [{"role": "user", "content": "\\udfff"}], '
            + b'"max_tokens": 4}',
            JSON,
        ),
        ("session-delete-newline", "DELETE", f"/v1/sessions/{quote(session + chr(10))}", None, {}),
        ("session-delete-nul", "DELETE", f"/v1/sessions/{quote(session)}%00", None, {}),
        ("session-delete-traversal", "DELETE", f"/v1/sessions/{quote(session)}%2F..", None, {}),
        # the knowledge base: uploads that are not multipart, carry no file, or only files it cannot take
        ("upload-json", "POST", kb_docs, json.dumps({"files": [KB_DOC]}).encode(), JSON),
        ("upload-text-plain", "POST", kb_docs, b"replaced!", {"Content-Type": "text/plain"}),
        ("upload-no-type", "POST", kb_docs, b"replaced!", {}),
        (
            "upload-form-encoded",
            "POST",
            kb_docs,
            b"files=replaced",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        ("upload-no-boundary", "POST", kb_docs, pdf, {"Content-Type": "multipart/form-data"}),
        (
            "upload-wrong-boundary",
            "POST",
            kb_docs,
            pdf,
            {"Content-Type": "multipart/form-data; boundary=nope"},
        ),
        ("upload-truncated", "POST", kb_docs, pdf[: len(pdf) // 2], {"Content-Type": pdf_type}),
        ("upload-empty", "POST", kb_docs, b"", {"Content-Type": pdf_type}),
        ("upload-wrong-field", "POST", kb_docs, wrong_field, {"Content-Type": wrong_field_type}),
        ("upload-exe", "POST", kb_docs, exe, {"Content-Type": exe_type}),
        ("upload-no-extension", "POST", kb_docs, noext, {"Content-Type": noext_type}),
        ("upload-double-extension", "POST", kb_docs, sneaky, {"Content-Type": sneaky_type}),
        ("upload-1001-files", "POST", kb_docs, many, {"Content-Type": many_type}),
        ("upload-corrupt-pdf", "POST", kb_docs, pdf, {"Content-Type": pdf_type}),
        ("upload-corrupt-docx", "POST", kb_docs, docx, {"Content-Type": docx_type}),
        (
            "upload-surrogate-name-kb",
            "POST",
            f"/v1/knowledge_bases/{quote(kb)}%ED%A0%80/documents",
            pdf,
            {"Content-Type": pdf_type},
        ),
        # the knowledge base's entry and documents: creates over it, deletes that only look like it
        (
            "kb-create-existing",
            "POST",
            "/v1/knowledge_bases",
            json.dumps({"name": kb, "description": "replaced!"}).encode(),
            JSON,
        ),
        (
            "kb-create-existing-surrogate",
            "POST",
            "/v1/knowledge_bases",
            raw({"name": kb, "description": "@"}, "\\ud800"),
            JSON,
        ),
        (
            "kb-create-folder-not-text",
            "POST",
            "/v1/knowledge_bases",
            json.dumps({"name": kb, "source_folder": ["/"]}).encode(),
            JSON,
        ),
        (
            "kb-create-name-newline",
            "POST",
            "/v1/knowledge_bases",
            json.dumps({"name": kb + "\n", "description": "replaced!"}).encode(),
            JSON,
        ),
        ("kb-delete-newline", "DELETE", f"/v1/knowledge_bases/{quote(kb + chr(10))}", None, {}),
        ("kb-delete-nul", "DELETE", f"/v1/knowledge_bases/{quote(kb)}%00", None, {}),
        ("kb-delete-dot-slash", "DELETE", f"/v1/knowledge_bases/.%2F{quote(kb)}", None, {}),
        ("kb-delete-upper", "DELETE", f"/v1/knowledge_bases/{quote(kb.upper())}", None, {}),
        ("doc-delete-nul", "DELETE", f"/v1/knowledge_bases/{kb}/documents/{KB_DOC}%00", None, {}),
        ("doc-delete-newline", "DELETE", f"/v1/knowledge_bases/{kb}/documents/{KB_DOC}%0A", None, {}),
        ("doc-delete-traversal", "DELETE", f"/v1/knowledge_bases/{kb}/documents/..%2F{KB_DOC}", None, {}),
        ("doc-delete-dot", "DELETE", f"/v1/knowledge_bases/{kb}/documents/.%2F{KB_DOC}", None, {}),
        (
            "doc-delete-surrogate",
            "DELETE",
            f"/v1/knowledge_bases/{kb}/documents/{KB_DOC}%ED%A0%80",
            None,
            {},
        ),
        (
            "doc-delete-wrong-case",
            "DELETE",
            f"/v1/knowledge_bases/{kb}/documents/{KB_DOC.upper()}",
            None,
            {},
        ),
    ]


REFUSAL_LABELS = [r[0] for r in refusals(Stored(kb="k", scratch_kb="s", session="x"))]
