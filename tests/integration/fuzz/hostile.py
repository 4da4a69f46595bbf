"""Hostile values, and the Hypothesis strategy that builds hostile requests to the JSON routes from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.integration.fuzz.bodies import (
    ENDPOINTS,
    Endpoint,
    form,
    multipart,
    nested,
    put,
    text_token,
    with_token,
)
from tests.integration.fuzz.common import ONE_MB, describe, folder_is_not_text

NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202eevil",
    "\ufeff",
    "\uffff\ufffe",
    "\U0010ffff",
    "\x7f\x1b[31m",
    "\r\n\r\nX-Injected: 1",
    "' OR '1'='1' --",
    '"; DROP TABLE chunks; --',
    "../../../../etc/passwd",
    "{{7*7}}${7*7}%s%n",
    "\\ud800",  # a literal backslash-u: valid text
    "\u0301" * 2000,
    "\U0001f600" * 2000,
    "\ud83d\ude00",  # a pair written out as two code points: lone surrogates to JSON
]
LONE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
BIG_TEXT = ["a" * ONE_MB, "\u00e9" * (ONE_MB // 2), "word " * (ONE_MB // 5), "\U0001f600" * (ONE_MB // 4)]
HOSTILE_TEXT = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=6), LONE, st.text(max_size=6)),
    st.text(max_size=24),
    st.sampled_from(BIG_TEXT),
)
NUMBERS = [
    "1e400",
    "-1e400",
    "1" + "0" * 400,  # 10**400
    "-1" + "0" * 400,
    "1" + "0" * 5000,  # past Python's 4300-digit int parsing limit
    "NaN",
    "Infinity",
    "-Infinity",
    "1e-400",
    "-0",
    "-0.0",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "2147483647",
    "4.9e-324",
    "1E+2",
    "01",
    "+1",
    ".5",
    "0x10",
    "1_000",
]
WRONG_TYPES: list[Any] = [None, True, 0, -1, 1.5, "", [], {}, [[]], {"": None}, ["x", 1], [{"role": "user"}]]
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]
DEPTHS = [65, 1000, 100_000]
CONTENT_TYPES: list[str | None] = [
    "application/json",
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=fuzz",
    "multipart/form-data",
    "application/json; charset=utf-16",
    "application/xml",
    "application/octet-stream",
]
# A valid but large value here (or null, which means "up to the context") makes the engine generate
# hundreds of tokens on a CPU: the fuzz keeps these at SMALL_MAX_TOKENS or invalid.
UNCAPPED_IF_NULL = {"max_tokens"}


def _numbers(key: Any) -> list[str]:
    return (
        [n for n in NUMBERS if n != "2147483647"]
        if key in ("max_tokens", "max_completion_tokens")
        else NUMBERS
    )


@dataclass
class Hostile:
    endpoint: Endpoint
    kind: str
    content: bytes
    content_type: str | None

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis pretty-prints dataclasses field by field (a 3 MB body in full); print the summary.
        printer.text(repr(self))

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return describe(
            "POST",
            f"{self.endpoint.name}/{self.kind}",
            self.content,
            {"Content-Type": str(self.content_type)},
        )


@st.composite
def hostile_requests(draw: st.DrawFn) -> Hostile:
    ep = draw(st.sampled_from(ENDPOINTS))
    base = ep.base()
    kind = draw(
        st.sampled_from(
            [
                "text",
                "text",
                "number",
                "number",
                "nesting",
                "duplicate",
                "truncated",
                "utf8",
                "shape",
                "type",
                "form",
                "key",
            ]
        )
    )
    if kind == "text":
        content = with_token(
            base, draw(st.sampled_from(ep.texts)), text_token(draw(HOSTILE_TEXT), draw(st.booleans()))
        )
    elif kind == "number":
        slot = draw(st.sampled_from(ep.numbers))
        content = with_token(base, slot, draw(st.sampled_from(_numbers(slot[-1]))).encode())
    elif kind == "nesting":
        slot = draw(st.sampled_from([*ep.texts, *ep.numbers]))
        content = with_token(
            base, slot, nested(draw(st.sampled_from(DEPTHS)), draw(st.sampled_from(["array", "object"])))
        )
    elif kind == "duplicate":
        key = draw(st.sampled_from(sorted(base)))
        other = draw(
            st.one_of(
                HOSTILE_TEXT.map(lambda t: text_token(t, True)),
                st.sampled_from(_numbers(key)).map(str.encode),
            )
        )
        pairs = [json.dumps(k).encode() + b": " + json.dumps(v).encode() for k, v in base.items()]
        dup = json.dumps(key).encode() + b": " + other
        pairs = [*pairs, dup] if draw(st.booleans()) else [dup, *pairs]
        content = b"{" + b", ".join(pairs) + b"}"
    elif kind == "truncated":
        whole = json.dumps(base).encode()
        content = whole[: draw(st.integers(0, len(whole) - 1))]
    elif kind == "utf8":
        how = draw(st.sampled_from(["bytes", "utf-16", "utf-32", "bom"]))
        if how == "bytes":
            bad = draw(st.sampled_from(INVALID_UTF8))
            content = with_token(base, draw(st.sampled_from(ep.texts)), b'"a' + bad + b'b"')
        elif how == "bom":
            content = b"\xef\xbb\xbf" + json.dumps(base).encode()
        else:
            content = json.dumps(base).encode(how)
    elif kind == "shape":
        content = draw(
            st.sampled_from(
                [
                    b"",
                    b" ",
                    b"null",
                    b"[]",
                    b'"x"',
                    b"0",
                    b"true",
                    b"{}",
                    b"[{}]",
                    b'{"":{}}',
                    b"\x00",
                    nested(100_000, "array"),
                    nested(100_000, "object"),
                    b"{" * 1000,
                ]
            )
        )
    elif kind == "type":
        slot = draw(st.sampled_from([*ep.texts, *ep.numbers]))
        wrong = [w for w in WRONG_TYPES if w is not None or slot[-1] not in UNCAPPED_IF_NULL]
        content = json.dumps(put(base, slot, draw(st.sampled_from(wrong)))).encode()
    elif kind == "form":
        content = form(base) if draw(st.booleans()) else multipart(base)
    else:  # "key": a hostile object key
        key = draw(HOSTILE_TEXT.filter(lambda t: len(t) < 4096))
        content = b"{" + text_token(key, draw(st.booleans())) + b": 1, " + json.dumps(base).encode()[1:]
    if ep.name == "kb-create" and not folder_is_not_text(content):
        content = json.dumps(base).encode()  # never reached: no slot is source_folder
    ctype = draw(st.sampled_from(CONTENT_TYPES)) if draw(st.integers(0, 2)) == 0 else "application/json"
    if kind == "form":
        ctype = (
            "application/x-www-form-urlencoded"
            if content[:2] != b"--"
            else "multipart/form-data; boundary=fuzz"
        )
    return Hostile(ep, kind, content, ctype)
