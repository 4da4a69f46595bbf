from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cluster.ingress import nginx, traefik
from cluster.settings import load_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    return load_settings(
        data_dir=tmp_path / "data", ingress={"upstreams": ["127.0.0.1:8000", "127.0.0.1:8001"]}
    )


def test_nginx_config_is_accepted_by_nginx(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prefix = tmp_path / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True)
    settings.logs_dir.mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx.render(settings, prefix))
    check = subprocess.run(
        [
            str(nginx.binary()),
            "-t",
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            str(settings.logs_dir / "e.log"),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_nginx_config_streams_and_limits(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = nginx.render(settings, tmp_path)
    assert "proxy_buffering off;" in text
    assert f"client_max_body_size {settings.gateway.max_body_bytes};" in text
    assert "server 127.0.0.1:8000 " in text and "server 127.0.0.1:8001 " in text
    assert "listen 127.0.0.1:8080" in text
    assert "daemon off;" in text


def test_traefik_config_from_same_settings(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    static = traefik.static_config(settings, tmp_path / "dyn.yml")
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    assert static["entryPoints"]["web"]["address"] == "127.0.0.1:8081"
    servers = traefik.dynamic_config(settings)["http"]["services"]["raychat"]["loadBalancer"]["servers"]
    assert [s["url"] for s in servers] == ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]


def test_traefik_routes_uploads_through_the_body_limit_only(settings) -> None:  # type: ignore[no-untyped-def]
    http = traefik.dynamic_config(settings)["http"]
    routers = http["routers"]
    assert routers["raychat-uploads"]["middlewares"] == ["body-limit"]
    assert "documents" in routers["raychat-uploads"]["rule"]
    assert http["middlewares"]["body-limit"]["buffering"]["maxRequestBodyBytes"] == 10 * 1024 * 1024
    # streams never pass the buffering middleware; only idempotent methods are retried
    assert "middlewares" not in routers["raychat"]
    assert routers["raychat-idempotent"]["middlewares"] == ["retry"]
    assert "POST" not in routers["raychat-idempotent"]["rule"]
    lb = http["services"]["raychat"]["loadBalancer"]
    assert lb["healthCheck"]["path"] == "/healthz" and lb["passiveHealthCheck"]["maxFailedAttempts"] == 2


def test_nginx_passive_health_checks(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = nginx.render(settings, tmp_path)
    assert "server 127.0.0.1:8000 max_fails=2 fail_timeout=5s;" in text
    assert "proxy_next_upstream error timeout http_502;" in text


def test_nginx_answers_its_own_refusals_in_openai_format(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = nginx.render(settings, tmp_path)
    # A URI nginx cannot parse cannot go to a named location: the 400 page is an internal URI.
    assert "error_page 400 /__raychat/bad_request;" in text
    block = text.split("location = /__raychat/bad_request {", 1)[1].split("}", 1)[0]
    assert "internal;" in block and '"code": "bad_request"' in block


def test_nginx_workers_run_as_the_user_who_runs_raychat(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os
    import pwd

    text = nginx.render(settings, tmp_path)
    if os.geteuid() == 0:  # a root master would hand its workers to `nobody`
        assert f"user {pwd.getpwuid(0).pw_name};" in text
    else:
        assert "\nuser " not in text
