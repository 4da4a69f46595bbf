"""Pure logic of sessions and the question cache: context fitting, cache keys, stream completeness."""

from __future__ import annotations

import pytest

from deployments.gateway import answer_cache, protocol, sessions, sse
from deployments.gateway.protocol import APIError


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def words(message: dict[str, str]) -> int:
    return len(message["content"].split())


def test_fit_history_drops_oldest_whole_turns() -> None:
    history = [msg("user", "a a"), msg("assistant", "b b"), msg("user", "c"), msg("assistant", "d d d")]
    new = [msg("user", "e e")]
    assert sessions.fit_history(history, new, budget=100, count=words) == history
    # 2 (new) + 4 (last turn) fits in 6; the first turn would need 4 more.
    assert sessions.fit_history(history, new, budget=6, count=words) == history[2:]
    assert sessions.fit_history(history, new, budget=5, count=words) == []
    assert sessions.fit_history([], new, budget=1, count=words) == []


def test_history_goes_between_system_and_the_new_turn() -> None:
    request = [msg("system", "be brief"), msg("user", "now")]
    history = [msg("user", "before"), msg("assistant", "ok")]
    assert sessions.with_history(request, history) == [request[0], *history, request[1]]
    assert sessions.turn_to_store(request, "answer") == [msg("user", "now"), msg("assistant", "answer")]


def test_turns_group_from_each_user_message() -> None:
    grouped = sessions.turns(
        [msg("assistant", "x"), msg("user", "q"), msg("assistant", "a"), msg("user", "r")]
    )
    assert [len(t) for t in grouped] == [1, 2, 1]


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 129, "with space", 12, None, "../etc"])
def test_session_id_is_checked(bad: object) -> None:
    with pytest.raises(APIError) as info:
        sessions.check_session_id(bad)
    assert info.value.status == 400 and info.value.param == "session_id"


def test_session_id_accepts_uuid_and_dotted() -> None:
    assert sessions.check_session_id("3f1c-9a:user.42_x") == "3f1c-9a:user.42_x"


def test_cache_key_normalises_whitespace_and_ignores_transport_fields() -> None:
    base = {"model": "m", "messages": [msg("user", "What is Ray?")], "temperature": 0}
    same = {
        "model": "m",
        "messages": [msg("user", "  What   is\nRay? ")],
        "temperature": 0,
        "user": "alice",
        "stream_options": {"include_usage": True},
    }
    assert answer_cache.cache_key("chat", base) == answer_cache.cache_key("chat", same)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"max_tokens": 9},
        {"stream": True},
        {"model": "other"},
        {"messages": [msg("user", "What is Serve?")]},
        {"messages": [msg("system", "x"), msg("user", "What is Ray?")]},
    ],
)
def test_cache_key_changes_with_what_decides_the_answer(change: dict[str, object]) -> None:
    base = {"model": "m", "messages": [msg("user", "What is Ray?")], "temperature": 0}
    assert answer_cache.cache_key("chat", base) != answer_cache.cache_key("chat", {**base, **change})


def test_cache_key_includes_endpoint_and_knowledge_base_version() -> None:
    body = {"messages": [msg("user", "q")], "temperature": 0}
    v1 = {"knowledge_base": "kb", "top_k": None, "mode": None, "version": "1.0:3"}
    v2 = {**v1, "version": "1.0:4"}
    keys = {
        answer_cache.cache_key("chat", body),
        answer_cache.cache_key("completions", body),
        answer_cache.cache_key("chat", body, v1),
        answer_cache.cache_key("chat", body, v2),
    }
    assert len(keys) == 4


@pytest.mark.parametrize(
    ("opt_in", "body", "expected"),
    [
        (None, {"temperature": 0}, True),
        (None, {"temperature": 0.0}, True),
        (None, {"temperature": 0.7}, False),
        (None, {}, False),
        (True, {"temperature": 1}, True),
        (False, {"temperature": 0}, False),
    ],
)
def test_wants_cache(opt_in: bool | None, body: dict[str, object], expected: bool) -> None:
    fields = {"messages": [msg("user", "q")], **body, **({} if opt_in is None else {"cache": opt_in})}
    assert protocol.chat_request(fields, "m").wants_cache() is expected


def test_a_boolean_temperature_is_refused_before_the_cache_is_asked() -> None:
    with pytest.raises(APIError) as info:
        protocol.chat_request({"messages": [msg("user", "q")], "temperature": False}, "m")
    assert info.value.param == "temperature"


def complete(text: str) -> bool:
    summary = sse.StreamSummary()
    summary.add(sse.parse(text))
    return summary.complete()


def test_stream_complete_needs_done_and_no_error() -> None:
    ok = 'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
    assert complete(ok)
    assert not complete('data: {"choices":[]}\n\n')
    failed = 'data: {"error": {"message": "boom"}}\n\ndata: [DONE]\n\n'
    assert not complete(failed)
    quoted = 'data: {"choices":[{"delta":{"content":"the \\"error\\": word"}}]}\n\ndata: [DONE]\n\n'
    assert complete(quoted)
