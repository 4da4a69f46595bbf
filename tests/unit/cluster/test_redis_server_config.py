"""The local Redis server's config and the settings clients get for it, without starting a server."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cluster import processes, redis_server
from cluster.redis_server import Capabilities
from cluster.settings import RaychatSettings, load_settings

WITH_TLS = Capabilities(version=(9, 1, 2), tls=True)
WITHOUT_TLS = Capabilities(version=(9, 1, 2), tls=False)


pytestmark = pytest.mark.usefixtures("clean_settings_env")


@pytest.fixture
def tls_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    files = (tmp_path / "tls" / "ca.crt", tmp_path / "tls" / "redis.crt", tmp_path / "tls" / "redis.key")
    monkeypatch.setattr(redis_server, "tls_files", lambda _settings: files)
    return files


def build(monkeypatch: pytest.MonkeyPatch, caps: Capabilities) -> None:
    monkeypatch.setattr(redis_server, "capabilities", lambda server=None: caps)


def settings_for(tmp_path: Path, url: str, **redis: object) -> RaychatSettings:
    return load_settings(data_dir=tmp_path / "data", redis={"url": url, **redis})


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://127.0.0.1:6379/0", ("127.0.0.1", 6379)),
        ("redis://localhost/0", ("127.0.0.1", 6379)),
        ("rediss://:ignored@127.0.0.1:7000/1", ("127.0.0.1", 7000)),
        ("redis://redis.internal:6379/0", None),
        ("unix:///run/redis.sock", None),
    ],
)
def test_local_target(tmp_path: Path, url: str, target: tuple[str, int] | None) -> None:
    assert redis_server.local_target(settings_for(tmp_path, url)) == target


def test_start_local_false_means_someone_elses_server(tmp_path: Path) -> None:
    assert (
        redis_server.local_target(settings_for(tmp_path, "redis://127.0.0.1:6379/0", start_local=False))
        is None
    )


def test_client_settings_for_a_local_tls_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path, Path]
) -> None:
    build(monkeypatch, WITH_TLS)
    settings = settings_for(tmp_path, "redis://user:inline@localhost:7001/3", key_prefix="rc")
    client = redis_server.client_settings(settings)
    assert client.url == "rediss://127.0.0.1:7001/3"  # no credentials in the URL Serve shows
    assert client.password_file == settings.secrets_dir / "redis.password"
    assert client.ca_file == tls_files[0]
    assert client.username is None and client.key_prefix == "rc"
    assert settings.redis.url == "redis://user:inline@localhost:7001/3"  # a copy; the original is untouched


@pytest.mark.parametrize(("caps", "local_tls"), [(WITHOUT_TLS, True), (WITH_TLS, False)])
def test_client_settings_for_a_local_plain_server(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tls_files: tuple[Path, Path, Path],
    caps: Capabilities,
    local_tls: bool,
) -> None:
    build(monkeypatch, caps)
    client = redis_server.client_settings(
        settings_for(tmp_path, "rediss://127.0.0.1:7002/0", local_tls=local_tls)
    )
    assert client.url == "redis://127.0.0.1:7002/0"
    assert client.ca_file is None and client.password_file is not None


def test_a_configured_password_file_is_the_local_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(monkeypatch, WITHOUT_TLS)
    mine = tmp_path / "mine.password"
    client = redis_server.client_settings(
        settings_for(tmp_path, "redis://127.0.0.1:7003/0", password_file=mine)
    )
    assert client.password_file == mine


def test_client_settings_leave_a_production_server_alone(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, "rediss://app:pw@redis.internal:6380/0", ca_file=tmp_path / "corp-ca.pem"
    )
    assert redis_server.client_settings(settings) is settings.redis


def test_config_with_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path, Path]
) -> None:
    for path in tls_files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("pem")
    settings = settings_for(tmp_path, "redis://127.0.0.1:7004/0")
    lines = redis_server.config_text(settings, "pw", WITH_TLS).splitlines()
    ca, cert, key = tls_files
    for wanted in (
        "bind 127.0.0.1",
        "protected-mode yes",
        "appendonly yes",
        'requirepass "pw"',
        "port 0",
        "tls-port 7004",
        f'tls-cert-file "{cert}"',
        f'tls-key-file "{key}"',
        f'tls-ca-cert-file "{ca}"',
        "tls-auth-clients no",
        'tls-protocols "TLSv1.2 TLSv1.3"',
        "enable-debug-command no",
        "enable-module-command no",
    ):
        assert wanted in lines
    assert "port 7004" not in lines  # no plain-TCP listener


def test_config_without_tls_and_for_an_old_build(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "redis://127.0.0.1:7005/0")
    text = redis_server.config_text(settings, "pw", Capabilities(version=(6, 2, 0), tls=False))
    assert "port 7005" in text.splitlines() and "tls-" not in text
    assert "enable-debug-command" not in text  # Redis 6 would refuse the unknown directive


def test_missing_certificates_are_named(tmp_path: Path, tls_files: tuple[Path, Path, Path]) -> None:
    settings = settings_for(tmp_path, "redis://127.0.0.1:7006/0")
    with pytest.raises(processes.ProcessError, match="redis.crt.*missing"):
        redis_server.config_text(settings, "pw", WITH_TLS)


def test_config_values_are_quoted_for_valkeys_parser() -> None:
    assert redis_server._quote('/data dir/"x"\\') == '"/data dir/\\"x\\"\\\\"'


def fake_server(path: Path, says: str, calls: Path) -> Path:
    path.write_text(
        "#!/bin/sh\n"
        f'echo x >> "{calls}"\n'
        'if [ "$1" = "--version" ]; then echo "Valkey server v=8.0.1 sha=0 malloc=libc bits=64"; exit 0; fi\n'
        f'echo "{says}"; exit 1\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(
    ("says", "tls"),
    [
        ("# No tls-cert-file configured!\n# Failed to configure TLS. Check logs for more info.", True),
        ("# Missing implement of connection type tls\n# Failed finding TLS support.", False),
        (
            "*** FATAL CONFIG FILE ERROR ***\n'tls-port 1234'\nBad directive or wrong number of arguments",
            False,
        ),
    ],
)
def test_probe_reads_what_the_build_says(tmp_path: Path, says: str, tls: bool) -> None:
    calls = tmp_path / "calls"
    server = fake_server(tmp_path / f"valkey-server-{tls}-{len(says)}", says, calls)
    assert redis_server.capabilities(server) == Capabilities(version=(8, 0, 1), tls=tls)
    assert redis_server.capabilities(server) == Capabilities(version=(8, 0, 1), tls=tls)
    assert len(calls.read_text().splitlines()) == 2  # probed once (--version and the TLS try), then cached
