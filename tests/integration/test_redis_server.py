"""The local Redis-compatible server: loopback only, append-only persistence across restarts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import valkey

from cluster import redis_server
from cluster.settings import load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_persists_across_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    port = free_port()
    settings = load_settings(data_dir=tmp_path / "data", redis={"url": f"redis://127.0.0.1:{port}/0"})
    try:
        assert redis_server.start(settings)
        assert not redis_server.start(settings)  # already running: harmless
        client = valkey.Valkey(host="127.0.0.1", port=port)
        client.set("raychat:test", "kept")
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.close()
        assert redis_server.stop(settings)
        assert not redis_server.ping("127.0.0.1", port)
        assert redis_server.start(settings)
        assert valkey.Valkey(host="127.0.0.1", port=port).get("raychat:test") == b"kept"
    finally:
        redis_server.stop(settings)


def test_remote_url_is_not_started_locally(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", redis={"url": "redis://redis.internal:6379/0"})
    assert redis_server.local_target(settings) is None
    assert not redis_server.start(settings)
