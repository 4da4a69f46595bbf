"""The local Redis-compatible server: loopback only, a generated password, TLS when the build has it,
append-only persistence across restarts. Starts only valkey (no Ray), in a temporary data dir."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import valkey
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from valkey.exceptions import AuthenticationError, ResponseError, ValkeyError
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from cluster import processes, redis_server
from cluster.settings import RaychatSettings, load_settings
from deployments.gateway.redis_state import RedisState, connect_kwargs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost: (ca, cert, key)."""
    directory.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raychat-redis")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.crt", directory / "redis.crt", directory / "redis.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RaychatSettings:
    for key in list(os.environ):
        if key.startswith("RAYCHAT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    # Our own CA, not cluster.tls: this test is about the server, not how certificates are made.
    files = make_certs(tmp_path / "tls")
    monkeypatch.setattr(redis_server, "tls_files", lambda _settings: files)
    return load_settings(data_dir=tmp_path / "data", redis={"url": f"redis://127.0.0.1:{free_port()}/0"})


@pytest.fixture
def running(settings: RaychatSettings) -> Iterator[RaychatSettings]:
    assert redis_server.start(settings)
    try:
        yield settings
    finally:
        redis_server.stop(settings)


def client(settings: RaychatSettings, **overrides: object) -> valkey.Valkey:
    """A client as raychat's own (client_settings + connect_kwargs), with `overrides` on top."""
    redis = redis_server.client_settings(settings)
    kwargs = {**connect_kwargs(redis), **overrides}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return valkey.Valkey.from_url(redis.url, **kwargs)


def port_of(settings: RaychatSettings) -> int:
    target = redis_server.local_target(settings)
    assert target is not None
    return target[1]


def test_persists_across_restart(settings: RaychatSettings) -> None:
    try:
        assert redis_server.start(settings)
        assert not redis_server.start(settings)  # already running: harmless
        password = redis_server.password_path(settings).read_text()
        with client(settings) as c:
            c.set("raychat:test", "kept")
            assert c.config_get("bind")["bind"] == "127.0.0.1"
            assert c.config_get("appendonly")["appendonly"] == "yes"
            assert c.config_get("protected-mode")["protected-mode"] == "yes"
        assert redis_server.stop(settings)
        assert not redis_server.ping(settings)
        assert redis_server.start(settings)
        with client(settings) as c:
            assert c.get("raychat:test") == b"kept"
        assert redis_server.password_path(settings).read_text() == password  # made once, then reused
    finally:
        redis_server.stop(settings)


def test_refuses_a_client_without_the_password(running: RaychatSettings) -> None:
    with client(running, password=None) as c, pytest.raises(ValkeyError, match="(?i)auth"):
        c.set("raychat:intruder", "x")
    with client(running, password="not-the-password") as c, pytest.raises(AuthenticationError):
        c.ping()


def test_the_gateway_connects_with_client_settings(running: RaychatSettings) -> None:
    async def roundtrip() -> str | None:
        state = RedisState(redis_server.client_settings(running))
        try:
            await state.run(lambda c: c.set(state.key("probe"), "ok"))
            return await state.run(lambda c: c.get(state.key("probe")))
        finally:
            await state.client.aclose()

    assert asyncio.run(roundtrip()) == "ok"


def test_tls_only_when_the_build_has_it(running: RaychatSettings) -> None:
    if not redis_server.uses_tls(running):
        pytest.skip(f"{redis_server.binary()} is built without TLS: the local server is plain TCP + password")
    redis = redis_server.client_settings(running)
    assert redis.url.startswith("rediss://") and redis.ca_file is not None
    password = redis_server.password_path(running).read_text().strip()
    port = port_of(running)
    # Plain TCP, even with the password: the server speaks only TLS.
    plain = valkey.Valkey(
        host="127.0.0.1", port=port, password=password, socket_timeout=2, socket_connect_timeout=2
    )
    with plain, pytest.raises((ValkeyConnectionError, ValkeyTimeoutError)):
        plain.ping()
    # TLS without raychat's CA (the system store): the server is not trusted.
    with (
        client(running, ssl_ca_certs=None) as c,
        pytest.raises(ValkeyConnectionError, match="(?i)certificate"),
    ):
        c.ping()
    # TLS with the CA and the password, by address and by name.
    with client(running) as c:
        assert c.ping()
    by_name = valkey.Valkey.from_url(f"rediss://localhost:{port}/0", **connect_kwargs(redis))
    with by_name:
        assert by_name.ping()


def test_secrets_stay_out_of_sight(running: RaychatSettings) -> None:
    password_file = redis_server.password_path(running)
    password = password_file.read_text().strip()
    assert len(password) >= 32
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(password_file.parent.stat().st_mode) == 0o700
    conf = redis_server.config_path(running)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o700 and conf.parent == running.secrets_dir
    pid = processes.read_pid(running.run_dir, redis_server.NAME)
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert password.encode() not in cmdline and b"requirepass" not in cmdline
    # Nor in the settings Serve gets, the pid record or the server's logs.
    assert password not in redis_server.client_settings(running).model_dump_json()
    assert password not in processes.pid_file(running.run_dir, redis_server.NAME).read_text()
    for log in running.logs_dir.iterdir():
        assert password not in log.read_text(errors="replace"), log


def test_debug_and_module_commands_are_disabled(running: RaychatSettings) -> None:
    if not redis_server.capabilities().command_switches:
        pytest.skip("this build predates enable-debug-command / enable-module-command")
    with client(running) as c:
        # Refused as not allowed, before the (harmless) arguments are even looked at.
        with pytest.raises(ResponseError, match="not allowed"):
            c.execute_command("DEBUG", "SLEEP", "0")
        with pytest.raises(ResponseError, match="not allowed"):
            c.execute_command("MODULE", "LOAD", "/nonexistent/module.so")


def test_remote_url_is_not_started_locally(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", redis={"url": "redis://redis.internal:6379/0"})
    assert redis_server.local_target(settings) is None
    assert not redis_server.start(settings)
