"""Retrieved passages into the prompt: numbered context, cited sources, the template in the last user turn."""

from __future__ import annotations

import pytest

from knowledge import prompt

HITS = [
    {"document": "pump.txt", "chunk": 0, "score": 0.9, "text": "Grease monthly.", "metadata": {}, "extra": 1},
    {"document": "valve.md", "chunk": 2, "score": 0.5, "text": "Test yearly.", "metadata": {"page": 3}},
]
TEMPLATE = "C:{context}|Q:{question}"


def test_context_and_sources() -> None:
    assert prompt.context_text(HITS) == "[1] (pump.txt) Grease monthly.\n\n[2] (valve.md) Test yearly."
    assert prompt.sources(HITS)[0] == {
        "document": "pump.txt",
        "chunk": 0,
        "score": 0.9,
        "text": "Grease monthly.",
        "metadata": {},
    }


def test_the_last_user_turn_gets_the_template_and_earlier_turns_stay() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "how often?"},
    ]
    filled = prompt.rag_messages(messages, "ctx", TEMPLATE)
    assert filled[:3] == messages[:3]
    assert filled[3] == {"role": "user", "content": "C:ctx|Q:how often?"}
    assert prompt.question(messages) == "how often?"


def test_no_context_says_so_and_no_question_is_an_error() -> None:
    assert prompt.rag_messages([{"role": "user", "content": "q"}], "", TEMPLATE)[0]["content"].startswith(
        "C:(no matching documents)"
    )
    with pytest.raises(prompt.NoQuestion):
        prompt.rag_messages([{"role": "system", "content": "x"}], "ctx", TEMPLATE)
