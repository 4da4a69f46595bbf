from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cluster import tls
from cluster.ingress import nginx, routing, traefik
from cluster.settings import RaychatSettings, load_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    return load_settings(
        data_dir=tmp_path / "data", ingress={"upstreams": ["127.0.0.1:8000", "127.0.0.1:8001"]}
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # off loopback: only redirects
def test_nginx_config_is_accepted_by_nginx(settings, tmp_path: Path, host: str) -> None:  # type: ignore[no-untyped-def]
    settings.ingress.host = host
    tls.ensure(settings)  # the certificates it names must exist for `nginx -t`
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
    # uploads (and only they: documents and Batch API files) may carry files up to gateway.max_upload_bytes
    location = f"location ~ {routing.UPLOAD_PATH} {{"
    upload = text.split(location, 1)[1].split("}", 1)[0]
    assert f"client_max_body_size {settings.gateway.max_upload_bytes};" in upload
    assert re.fullmatch(routing.UPLOAD_PATH, "/v1/files") and re.fullmatch(
        routing.UPLOAD_PATH, "/v1/knowledge_bases/k/documents"
    )
    assert not re.fullmatch(routing.UPLOAD_PATH, "/v1/files/file-1/content")
    uploads = text.count(location)
    assert (
        uploads >= 1 and text.count(f"client_max_body_size {settings.gateway.max_upload_bytes};") == uploads
    )
    assert "server 127.0.0.1:8000 " in text and "server 127.0.0.1:8001 " in text
    assert "listen 127.0.0.1:8080" in text
    assert "daemon off;" in text


def test_traefik_config_from_same_settings(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    static = traefik.static_config(settings, tmp_path / "dyn.yml")
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    assert static["entryPoints"]["web"]["address"] == "127.0.0.1:8081"
    servers = traefik.dynamic_config(settings)["http"]["services"]["raychat"]["loadBalancer"]["servers"]
    # mTLS to Serve: HTTPS, Traefik's client certificate, Serve's checked against raychat's CA by name
    assert [s["url"] for s in servers] == ["https://127.0.0.1:8000", "https://127.0.0.1:8001"]
    transport = traefik.dynamic_config(settings)["http"]["serversTransports"]["raychat"]
    files = tls.paths(settings)
    assert transport["serverName"] == tls.SERVE_NAME and transport["rootCAs"] == [str(files.ca_cert)]
    assert transport["certificates"] == [
        {"certFile": str(files.ingress_client_cert), "keyFile": str(files.ingress_client_key)}
    ]


def test_traefik_routes_uploads_through_the_body_limit_only(settings) -> None:  # type: ignore[no-untyped-def]
    http = traefik.dynamic_config(settings)["http"]
    routers = http["routers"]
    assert routers["raychat-uploads"]["middlewares"] == ["upload-limit"]
    assert "documents" in routers["raychat-uploads"]["rule"]
    assert http["middlewares"]["upload-limit"]["buffering"]["maxRequestBodyBytes"] == 64 * 1024 * 1024
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


def _listen_blocks(text: str) -> dict[str, str]:
    """Each `server { ... }` block of the rendered config by its listen line."""
    blocks = text.split("    server {")[1:]
    return {block.split("listen ", 1)[1].split(";", 1)[0]: block for block in blocks}


def test_nginx_https_listener_with_hsts_modern_tls_and_mtls_upstream(settings) -> None:  # type: ignore[no-untyped-def]
    blocks = _listen_blocks(nginx.render(settings, Path("/p")))
    https = blocks["127.0.0.1:8443 ssl backlog=4096"]
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in https and "RC4" not in https and "CBC" not in https
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in https
    files = tls.paths(settings)
    assert f"ssl_certificate {files.server_cert};" in https
    for block in blocks.values():  # both listeners reach Serve over mTLS
        assert "proxy_pass https://raychat_serve;" in block
        assert f"proxy_ssl_certificate {files.ingress_client_cert};" in block
        assert "proxy_ssl_verify on;" in block and f"proxy_ssl_name {tls.SERVE_NAME};" in block
        assert "proxy_buffering off;" in block  # streams stay unbuffered


def test_plain_http_only_redirects_off_loopback(settings: RaychatSettings) -> None:
    loopback = _listen_blocks(nginx.render(settings, Path("/p")))["127.0.0.1:8080 backlog=4096"]
    assert "proxy_pass" in loopback  # the quick start on loopback
    settings.ingress.host = "10.0.0.5"
    plain = _listen_blocks(nginx.render(settings, Path("/p")))["10.0.0.5:8080 backlog=4096"]
    assert "proxy_pass" not in plain and "return 308 https://$host:8443$request_uri;" in plain
    routers = traefik.dynamic_config(settings)["http"]["routers"]
    assert [name for name, r in routers.items() if "web" in r["entryPoints"]] == ["raychat-redirect"]
    assert routers["raychat-redirect"]["middlewares"] == ["to-https"]
    assert all("hsts" in r["middlewares"] for name, r in routers.items() if name.endswith("-tls"))


def test_tls_off_is_plain_http_everywhere(settings: RaychatSettings) -> None:
    settings.tls.enabled = False
    text = nginx.render(settings, Path("/p"))
    assert " ssl" not in text and "proxy_pass http://raychat_serve;" in text and "proxy_ssl" not in text
    config = traefik.dynamic_config(settings)
    assert (
        "tls" not in config and "websecure" not in traefik.static_config(settings, Path("d"))["entryPoints"]
    )
    assert config["http"]["services"]["raychat"]["loadBalancer"]["servers"][0]["url"].startswith("http://")


def test_traefik_tls_options(settings: RaychatSettings) -> None:
    config = traefik.dynamic_config(settings)
    options = config["tls"]["options"]["default"]
    assert options["minVersion"] == "VersionTLS12" and all(
        "GCM" in c or "CHACHA" in c for c in options["cipherSuites"]
    )
    static = traefik.static_config(settings, Path("d"))
    assert static["entryPoints"]["websecure"]["address"] == "127.0.0.1:8444"


def test_direct_ingress_sends_requests_to_the_gateway_replicas_ports(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", serve={"direct_ingress_ports": 3})
    text = nginx.render(settings, tmp_path)
    for port in (30000, 30001, 30002):
        assert f"server 127.0.0.1:{port} max_fails=2 fail_timeout=5s;" in text
    assert "127.0.0.1:30003" not in text
    # Serve's proxy only while no replica port answers; every upstream tried once before giving up.
    assert "server 127.0.0.1:8000 backup;" in text
    assert "proxy_next_upstream_tries 5;" in text
    services = traefik.dynamic_config(settings)["http"]["services"]
    failover = services["raychat"]["failover"]
    assert (failover["service"], failover["fallback"]) == ("raychat-replicas", "raychat-serve-proxy")
    # A port the health check has not taken out yet (after a reload) answers 502: sent to Serve's proxy.
    assert failover["errors"]["status"] == ["502"]
    replicas = services["raychat-replicas"]["loadBalancer"]
    assert [s["url"] for s in replicas["servers"]] == [
        f"https://127.0.0.1:{port}" for port in (30000, 30001, 30002)
    ]
    assert replicas["healthCheck"]["path"] == "/healthz"
    fallback = services["raychat-serve-proxy"]["loadBalancer"]
    assert [s["url"] for s in fallback["servers"]] == ["https://127.0.0.1:8000"]


def test_direct_ingress_off_goes_through_serves_proxy(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", serve={"direct_ingress": False})
    text = nginx.render(settings, tmp_path)
    assert "server 127.0.0.1:8000 max_fails=2 fail_timeout=5s;" in text
    assert "backup" not in text and "30000" not in text
    assert "loadBalancer" in traefik.dynamic_config(settings)["http"]["services"]["raychat"]
