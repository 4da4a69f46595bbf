"""SSE as typed events: parsing engine and wire text, the stream summary, sources, and the client reader."""

from __future__ import annotations

import json

from deployments.gateway import sse


def chunk(text: str | None = None, usage: dict[str, int] | None = None) -> str:
    data: dict[str, object] = {"object": "chat.completion.chunk", "choices": []}
    if text is not None:
        data["choices"] = [{"index": 0, "delta": {"content": text}}]
    if usage is not None:
        data["usage"] = usage
    return f"data: {json.dumps(data)}\n\n"


def test_parse_keeps_the_wire_text_and_reads_done() -> None:
    text = chunk("Hel") + chunk("lo") + "data: [DONE]\n\n"
    events = sse.parse(text)
    assert [e.texts() for e in events] == [["Hel"], ["lo"], []]
    assert events[-1].done and not events[0].done
    assert sse.to_wire(events) == text


def test_summary_gathers_answer_usage_and_completeness() -> None:
    summary = sse.StreamSummary()
    summary.add(sse.parse(chunk("a") + chunk("b")))
    assert summary.answer() == "ab" and summary.tokens() == 2 and not summary.complete()
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    summary.add(sse.parse(chunk(usage=usage) + "data: [DONE]\n\n"))
    assert summary.usage() == usage and summary.tokens() == 5 and summary.complete()


def test_an_error_event_makes_a_stream_not_worth_replaying() -> None:
    summary = sse.StreamSummary()
    summary.add(sse.parse('data: {"error": {"message": "boom"}}\n\ndata: [DONE]\n\n'))
    assert summary.done and summary.errored and not summary.complete()


def test_text_that_mentions_error_is_not_an_error() -> None:
    summary = sse.StreamSummary()
    summary.add(sse.parse(chunk('the "error": word') + "data: [DONE]\n\n"))
    assert summary.complete() and summary.answer() == 'the "error": word'


def test_completion_text_counts_as_answer() -> None:
    event = sse.parse('data: {"choices": [{"index": 0, "text": " three"}]}\n\n')[0]
    assert event.texts() == [" three"]


def test_sources_go_into_the_first_data_event_only() -> None:
    events = sse.parse(chunk("x") + chunk("y"))
    sources = [{"document": "d.txt", "chunk": 0, "score": 1.0, "text": "t", "metadata": {}}]
    out = sse.with_sources(events, sources)
    assert out[0].data is not None and out[0].data["sources"] == sources
    assert json.loads(out[0].wire[len("data: ") :])["sources"] == sources
    assert out[1] is events[1]


def test_reader_joins_events_split_across_pieces() -> None:
    wire = (chunk("안녕") + chunk("你好") + "data: [DONE]\n\n").encode()
    reader = sse.WireReader()
    events = []
    for i in range(0, len(wire), 7):
        events += reader.feed(wire[i : i + 7])  # pieces end inside multi-byte characters
    assert [t for e in events for t in e.texts()] == ["안녕", "你好"]
    assert events[-1].done


def test_event_encodes_unicode_as_is() -> None:
    assert "你好" in sse.event({"text": "你好"}).wire
