"""How every Redis client is built from RedisSettings: password from its file, user, TLS verification."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
import valkey
import valkey.asyncio

from deployments.config import RedisSettings
from deployments.gateway.auth.secrets import write_secret
from deployments.gateway.redis_state import (
    RedisState,
    RedisUnavailable,
    connect_kwargs,
    read_password,
    safe_url,
)

PASSWORD = "s3cret-" + "x" * 40


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "redis.password"
    write_secret(path, PASSWORD)
    return path


def test_plain_url_without_credentials_gets_timeouts_only() -> None:
    kwargs = connect_kwargs(RedisSettings(url="redis://127.0.0.1:6379/0", socket_timeout_s=1.5))
    assert kwargs == {"socket_timeout": 1.5, "socket_connect_timeout": 1.5}


def test_password_comes_from_its_file_and_user_from_settings(password_file: Path) -> None:
    settings = RedisSettings(url="redis://127.0.0.1:6379/0", password_file=password_file, username="raychat")
    kwargs = connect_kwargs(settings)
    assert kwargs["password"] == PASSWORD and kwargs["username"] == "raychat"
    assert not any(k.startswith("ssl_") for k in kwargs)  # a plain connection rejects ssl_* arguments
    # ... and the settings (what Serve's dashboard shows) carry only the path.
    assert PASSWORD not in settings.model_dump_json()


def test_rediss_verifies_the_server_with_the_given_ca(password_file: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    kwargs = connect_kwargs(RedisSettings(url="rediss://127.0.0.1:6380/0", ca_file=ca))
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True
    assert kwargs["ssl_ca_certs"] == str(ca)
    assert kwargs["ssl_min_version"] == ssl.TLSVersion.TLSv1_2


def test_rediss_without_ca_uses_the_system_store() -> None:
    kwargs = connect_kwargs(RedisSettings(url="rediss://redis.internal:6380/0"))
    assert kwargs["ssl_cert_reqs"] == "required" and "ssl_ca_certs" not in kwargs


def test_missing_or_empty_password_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="redis.password_file .*nope"):
        connect_kwargs(RedisSettings(password_file=missing))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(FileNotFoundError, match="missing or empty"):
        read_password(empty)


def test_only_the_first_line_is_the_password(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(f"{PASSWORD}\n# a note\n")
    assert read_password(path) == PASSWORD


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://user:pa@ss@redis.internal:6380/0", "rediss://***@redis.internal:6380/0"),
        ("redis://:pw@10.0.0.5:6379/2?protocol=3", "redis://***@10.0.0.5:6379/2?protocol=3"),
    ],
)
def test_safe_url_hides_credentials(url: str, safe: str) -> None:
    assert safe_url(url) == safe


def test_sync_and_async_clients_accept_the_kwargs(password_file: Path, tmp_path: Path) -> None:
    """No connection is opened: the pools are built, which is where a wrong keyword would fail."""
    settings = RedisSettings(
        url="rediss://127.0.0.1:6380/0", password_file=password_file, ca_file=tmp_path / "ca.crt"
    )
    for client in (
        valkey.Valkey.from_url(settings.url, **connect_kwargs(settings)),
        valkey.asyncio.Valkey.from_url(settings.url, **connect_kwargs(settings)),
    ):
        pool = client.connection_pool
        assert "SSL" in pool.connection_class.__name__
        assert pool.connection_kwargs["password"] == PASSWORD
        assert pool.connection_kwargs["ssl_ca_certs"] == str(tmp_path / "ca.crt")


def test_a_password_in_the_url_wins(password_file: Path) -> None:
    settings = RedisSettings(url="redis://app:from-url@redis.internal:6379/0", password_file=password_file)
    pool = valkey.Valkey.from_url(settings.url, **connect_kwargs(settings)).connection_pool
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["password"]) == ("app", "from-url")


def test_redis_state_reads_the_password_once_and_never_logs_it(
    password_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: the first call fails, and its warning must not carry a secret.
    settings = RedisSettings(url="redis://:inline-pw@127.0.0.1:1/0", password_file=password_file)

    async def scenario() -> None:
        state = RedisState(settings)
        password_file.unlink()  # read at construction: the client keeps working without the file
        assert state.client.connection_pool.connection_kwargs["password"] == "inline-pw"
        try:
            with pytest.raises(RedisUnavailable, match="unavailable"):
                await state.run(lambda c: c.ping())
        finally:
            await state.client.aclose()

    with caplog.at_level(logging.WARNING, logger="raychat.redis"):
        asyncio.run(scenario())
    assert caplog.records and "inline-pw" not in caplog.text and PASSWORD not in caplog.text
    assert "***@127.0.0.1:1/0" in caplog.text
