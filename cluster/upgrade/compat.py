"""What a new version may change, checked before it starts: the cluster it runs on stays the same, a new
model name keeps the old one as an alias, a smaller context window is reported with the stored sessions
it will trim, and a new embedding model makes every knowledge base incompatible."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cluster.settings import RaychatSettings

# Sections that describe the cluster rather than the app: an upgrade runs on the same ones.
_SAME_CLUSTER = ("data_dir", "ray", "ingress", "redis", "tls", "firewall")


class UpgradeRefused(ValueError):
    """The new settings cannot take over from the running ones; the message says why and what to do."""


@dataclass
class Plan:
    """What the checks decided about the new version."""

    green: RaychatSettings
    notes: list[str] = field(default_factory=list)
    reindex: bool = False


def plan(
    blue: RaychatSettings, green: RaychatSettings, *, reindex: bool = False, rolling: bool = False
) -> Plan:
    """The green settings to deploy (model aliases added) and notes for the operator; UpgradeRefused
    when they cannot take over."""
    for name in _SAME_CLUSTER:
        if getattr(blue, name) != getattr(green, name):
            raise UpgradeRefused(
                f"'{name}' differs between the running settings and the new ones: an upgrade changes "
                "the app, not the cluster (stop and start for that)"
            )
    serve_blue = blue.serve.model_dump(exclude={"release"})
    if serve_blue != green.serve.model_dump(exclude={"release"}):
        raise UpgradeRefused("'serve' differs beyond 'serve.release': an upgrade keeps Serve's own setup")
    result = Plan(green=green)
    if rolling:
        _rolling_limits(blue, green, reindex)
    if blue.knowledge.embedding_identity() != green.knowledge.embedding_identity():
        if not reindex:
            raise UpgradeRefused(
                f"the embedding changes ({blue.knowledge.embedding_identity()} -> "
                f"{green.knowledge.embedding_identity()}): every stored knowledge base would be "
                "searched with vectors of another model or size. Run the upgrade with --reindex"
            )
        result.reindex = True
    aliases = [a for a in green.llm.model_aliases if a != green.llm.model_id]
    if blue.llm.model_id != green.llm.model_id and green.upgrade.keep_previous_model_name:
        if blue.llm.model_id not in aliases:
            aliases.append(blue.llm.model_id)
            result.notes.append(
                f"model '{blue.llm.model_id}' is now served as '{green.llm.model_id}'; the old name "
                "stays an alias (list it in llm.model_aliases to keep it beyond the next upgrade)"
            )
    if aliases != green.llm.model_aliases:
        llm = green.llm.model_copy(update={"model_aliases": aliases})
        result.green = green.model_copy(update={"llm": llm})
    return result


def _rolling_limits(blue: RaychatSettings, green: RaychatSettings, reindex: bool) -> None:
    """A rolling upgrade has old and new replicas answer side by side in one app: what only works when
    both colours are whole is refused, with the way that works."""
    if reindex or blue.knowledge.embedding_identity() != green.knowledge.embedding_identity():
        raise UpgradeRefused(
            "a new embedding needs the blue-green strategy: its re-index builds the new tables beside the "
            "old ones, and every replica of a colour must search the same ones"
        )
    if blue.llm.model_id != green.llm.model_id:
        raise UpgradeRefused(
            f"a new served model name ('{blue.llm.model_id}' -> '{green.llm.model_id}') needs the "
            "blue-green strategy: during a rolling upgrade old replicas, which know only the old name, "
            "answer beside new ones"
        )


def window_note(blue: RaychatSettings, green: RaychatSettings, model_path: Path) -> str | None:
    """What a smaller context window does to the stored sessions, said before anything moves."""
    if green.llm.max_model_len >= blue.llm.max_model_len:
        return None
    over, total = sessions_over_window(green, model_path)
    return (
        f"the context window shrinks to {green.llm.max_model_len} tokens: {over} of {total} stored "
        "sessions hold more; their oldest turns will be left out of the prompt (trimmed, not broken)"
    )


def sessions_over_window(settings: RaychatSettings, model_path: Path) -> tuple[int, int]:
    """(sessions whose stored conversation no longer fits the new context window, sessions stored):
    those are trimmed to their newest turns, as any long conversation is, not broken."""
    import valkey

    from cluster import redis_server
    from deployments.gateway.redis_state import connect_kwargs
    from deployments.gateway.sessions import TokenCounter

    redis = redis_server.client_settings(settings)
    count = TokenCounter(model_path, settings.sessions.message_overhead_tokens)
    budget = settings.llm.max_model_len - settings.sessions.reserve_tokens
    client = valkey.Valkey.from_url(redis.url, **connect_kwargs(redis))
    over = total = 0
    try:
        for key in client.scan_iter(match=f"{redis.key_prefix}:session:*:messages", count=500):
            total += 1
            messages = [json.loads(item) for item in client.lrange(key, 0, -1)]
            if sum(count(m) for m in messages) > budget:
                over += 1
    finally:
        client.close()
    return over, total
