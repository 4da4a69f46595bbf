"""API keys from the command line (`raychat keys ...`), and the keys `raychat up` makes on first start.

Both talk to Redis with the gateway's own KeyStore, so the CLI and `/v1/admin/keys` are one system.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cluster import redis_server
from cluster.settings import RaychatSettings
from deployments.config import Limits
from deployments.gateway.auth.keys import KeyRecord, KeyStore, split
from deployments.gateway.auth.secrets import (
    ADMIN_KEY_FILE,
    SERVICE_KEY_FILE,
    ensure_pepper,
    read_secret,
    write_secret,
)
from deployments.gateway.auth.security_log import SecurityLog
from deployments.gateway.protocol import APIError, key_create, key_update
from deployments.gateway.redis_state import RedisState

T = TypeVar("T")
ADMIN_NAME = "admin"
SERVICE_NAME = "raychat-service"
# raychat's own tools (Locust tiers, benchmarks, batch jobs) send far more than a person.
SERVICE_LIMITS = Limits(rpm=1_000_000, tpm=1_000_000_000)


def _run(settings: RaychatSettings, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = RedisState(redis_server.client_settings(settings))
        try:
            return await work(KeyStore(redis, ensure_pepper(settings.secrets_dir)))
        finally:
            await redis.client.aclose()

    return asyncio.run(main())


def security_log(settings: RaychatSettings) -> SecurityLog:
    gw = settings.gateway
    return SecurityLog(
        settings.logs_dir / "security.jsonl", max_bytes=gw.audit_max_bytes, backups=gw.audit_backups
    )


@dataclass(frozen=True)
class Bootstrap:
    admin_key_file: Path
    admin_key_created: str | None  # the key, only on the start that made it
    warnings: list[str]


def bootstrap(settings: RaychatSettings) -> Bootstrap:
    """On every `up`: the pepper, the admin key and the service key exist; a key whose record Redis lost
    (a fresh Redis) is registered again from its file. Only hashes go to Redis."""
    secrets_dir = settings.secrets_dir
    admin_file, service_file = secrets_dir / ADMIN_KEY_FILE, secrets_dir / SERVICE_KEY_FILE

    async def work(store: KeyStore) -> Bootstrap:
        warnings: list[str] = []
        created = None
        wanted = ((admin_file, ADMIN_NAME, None), (service_file, SERVICE_NAME, SERVICE_LIMITS))
        for path, name, limits in wanted:
            key = read_secret(path)
            parts = split(key) if key else None
            record = await store.get(parts[0]) if parts else None
            if key is not None and parts is not None and record is not None:
                if not record.active(time.time()):
                    warnings.append(
                        f"the key in {path} is revoked or expired; delete the file and run `up` again "
                        "for a new one"
                    )
                continue
            _, new_key = await store.create(name, "admin", ["*"], limits, key=key if parts else None)
            if key is None or parts is None:
                write_secret(path, new_key)
                if path == admin_file:
                    created = new_key
            security_log(settings).record(
                trace_id=None, identity=None, action="key.bootstrap", target=name, outcome="ok"
            )
        return Bootstrap(admin_file, created, warnings)

    return _run(settings, work)


# --- the CLI ---------------------------------------------------------------------------------------
def _print(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _log(settings: RaychatSettings, action: str, target: str, outcome: str = "ok") -> None:
    security_log(settings).record(
        trace_id=None, identity="cli", action=action, target=target, outcome=outcome
    )


def _body(args: Any) -> dict[str, Any]:
    """The arguments as the body `/v1/admin/keys` takes, so both are checked by the same rules."""
    fields = {
        "name": args.name,
        "role": args.role,
        "knowledge_bases": args.kb,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "daily_tokens": args.daily_tokens,
        "expires_days": args.expires_days,
    }
    return {k: v for k, v in fields.items() if v is not None}


def command(settings: RaychatSettings, args: Any) -> int:
    """`raychat keys create|list|revoke|update`: one JSON document on stdout."""
    try:
        return _command(settings, args)
    except APIError as exc:
        print(f"raychat keys: {exc.message}", file=sys.stderr)
        return 2


def _command(settings: RaychatSettings, args: Any) -> int:
    if args.keys_command == "create":
        parsed = key_create(_body(args))
        limits = Limits(rpm=parsed.rpm, tpm=parsed.tpm, daily_tokens=parsed.daily_tokens)
        record, key = _run(
            settings,
            lambda s: s.create(parsed.name, parsed.role, parsed.knowledge_bases, limits, parsed.expires_days),
        )
        _log(settings, "key.create", record.id)
        _print({"object": "api_key", **record.public(), "key": key})
        return 0
    if args.keys_command == "list":
        _print({"object": "list", "data": [r.public() for r in _run(settings, lambda s: s.list())]})
        return 0
    if args.keys_command == "revoke":
        return _done(settings, "key.revoke", args.id, _run(settings, lambda s: s.revoke(args.id)))
    update = key_update(_body(args))
    changes = {f: getattr(update, f) for f in update.model_fields_set}
    return _done(settings, "key.update", args.id, _run(settings, lambda s: s.update(args.id, **changes)))


def _done(settings: RaychatSettings, action: str, key_id: str, record: KeyRecord | None) -> int:
    if record is None:
        print(f"raychat: no API key {key_id!r}", file=sys.stderr)
        return 1
    _log(settings, action, key_id)
    _print({"object": "api_key", **record.public()})
    return 0


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys: create, list, update, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    for name in ("create", "update"):
        p = keys_sub.add_parser(
            name, help=f"{name} a key (prints one JSON object; create shows the key once)"
        )
        if name == "update":
            p.add_argument("id")
        p.add_argument("--name", required=name == "create")
        p.add_argument("--role", choices=["admin", "editor", "user"], required=name == "create")
        p.add_argument("--kb", action="append", help="a granted knowledge base; repeat; '*' grants all")
        p.add_argument("--rpm", type=int, help="requests per minute")
        p.add_argument("--tpm", type=int, help="tokens per minute")
        p.add_argument("--daily-tokens", type=int, help="tokens per UTC day")
        p.add_argument("--expires-days", type=float, help="the key stops working after this many days")
    keys_sub.add_parser("list", help="every key's record (never the key)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key; every replica refuses it within 5 s")
    revoke.add_argument("id")
