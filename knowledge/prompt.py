"""Retrieved passages into a prompt: the numbered context, the sources an answer cites, and the template
filled in place of the last user message. Shared by the gateway's retrieval stage and the batch jobs."""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
SOURCE_FIELDS = ("document", "chunk", "score", "text", "metadata")


class NoQuestion(ValueError):
    """A knowledge-base chat without a user message that has text content."""


def context_text(hits: list[dict[str, Any]]) -> str:
    return "\n\n".join(f"[{n}] ({h['document']}) {h['text']}" for n, h in enumerate(hits, start=1))


def sources(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: h[k] for k in SOURCE_FIELDS} for h in hits]


def question(messages: list[Message]) -> str:
    """The last user message's text: what retrieval searches for."""
    return next(
        (
            m["content"]
            for m in reversed(messages)
            if m.get("role") == "user" and isinstance(m.get("content"), str)
        ),
        "",
    )


def rag_messages(messages: list[Message], context: str, template: str) -> list[Message]:
    """The template, filled with the context and the question, replaces the last user message; earlier
    turns stay as they are."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user" and isinstance(messages[i].get("content"), str):
            filled = template.format(
                context=context or "(no matching documents)", question=messages[i]["content"]
            )
            return [*messages[:i], {**messages[i], "content": filled}, *messages[i + 1 :]]
    raise NoQuestion("a knowledge-base chat needs a user message with text content")
