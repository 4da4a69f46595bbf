"""Server-sent events as typed values: engine output and wire text in, events out, and back.

The one place that knows the `data: ...\\n\\n` framing. Each event keeps the wire text it arrived as, so
relaying costs no re-encoding; cache replay, the audit tap, token counting, metrics and the `sources`
chunk read the parsed `data`. Ray-free and FastAPI-free: the load tests parse streams with it too.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DONE_TEXT = "[DONE]"


@dataclass(frozen=True, slots=True)
class Event:
    """One `data:` event: a JSON object, or the final `[DONE]` (data None)."""

    data: dict[str, Any] | None
    wire: str

    @property
    def done(self) -> bool:
        return self.data is None

    @property
    def is_error(self) -> bool:
        return self.data is not None and ("error" in self.data or self.data.get("object") == "error")

    def texts(self) -> list[str]:
        """The generated text this event carries (chat deltas or completion text)."""
        if not self.data:
            return []
        out = []
        for choice in self.data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text is None:
                text = choice.get("text")
            if isinstance(text, str) and text:
                out.append(text)
        return out

    @property
    def usage(self) -> dict[str, Any] | None:
        usage = self.data.get("usage") if self.data else None
        return usage if isinstance(usage, dict) else None


DONE = Event(None, f"data: {DONE_TEXT}\n\n")


def event(data: dict[str, Any]) -> Event:
    return Event(data, f"data: {json.dumps(data, ensure_ascii=False)}\n\n")


def parse_payload(payload: str) -> Event:
    """The text after `data: ` of one event."""
    payload = payload.strip()
    if payload == DONE_TEXT:
        return DONE
    data = json.loads(payload)
    return Event(data if isinstance(data, dict) else {"value": data}, f"data: {payload}\n\n")


def parse(text: str) -> list[Event]:
    """Complete events from wire text; comment and non-data lines are skipped."""
    events = []
    for block in text.split("\n\n"):
        payload = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
        if payload:
            events.append(parse_payload(payload))
    return events


def to_wire(events: Iterable[Event]) -> str:
    return "".join(e.wire for e in events)


@dataclass
class WireReader:
    """Events from a byte or text stream that arrives in arbitrary pieces (a client reading a response)."""

    _buffer: str = ""
    # A piece may end inside a multi-byte character: decode incrementally.
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")()
    )

    def feed(self, piece: str | bytes) -> list[Event]:
        self._buffer += self._decoder.decode(piece) if isinstance(piece, bytes) else piece
        self._buffer = self._buffer.replace("\r\n", "\n")
        complete, sep, rest = self._buffer.rpartition("\n\n")
        if not sep:
            return []
        self._buffer = rest
        return parse(complete)


def with_sources(events: list[Event], sources: list[dict[str, Any]]) -> list[Event]:
    """`sources` in the first data event (OpenAI clients keep unknown chunk fields)."""
    for i, item in enumerate(events):
        if item.data is not None and not item.is_error:
            return [*events[:i], event({**item.data, "sources": sources}), *events[i + 1 :]]
    return events


@dataclass
class StreamSummary:
    """What the stream said, gathered as events pass: the answer, usage, and whether it ended cleanly."""

    events: list[Event] = field(default_factory=list)
    _texts: list[str] = field(default_factory=list)
    _content_events: int = 0
    _usage: dict[str, Any] | None = None
    errored: bool = False
    done: bool = False

    def add(self, events: Iterable[Event]) -> None:
        for item in events:
            self.events.append(item)
            if item.done:
                self.done = True
                continue
            if item.is_error:
                self.errored = True
            texts = item.texts()
            if texts:
                self._content_events += 1
                self._texts += texts
            if item.usage is not None:
                self._usage = item.usage

    def answer(self) -> str:
        return "".join(self._texts)

    def usage(self) -> dict[str, int]:
        """The stream's last `usage` object (present when the client asked for include_usage)."""
        if not self._usage:
            return {}
        return {k: int(v) for k, v in self._usage.items() if k.endswith("_tokens") and isinstance(v, int)}

    def tokens(self) -> int:
        usage = self.usage()
        if "total_tokens" in usage:
            return usage["total_tokens"]
        return self._content_events  # one content event per generated token

    def complete(self) -> bool:
        """Worth replaying from the cache: it ended with [DONE] and carried no error event."""
        return self.done and not self.errored
