"""What every Ray process is given for the locked planes, from settings (no Ray started)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cluster import planes, tls
from cluster.ray_node import runtime_env_vars
from cluster.settings import load_settings


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


def test_token_is_made_once_0600_without_a_newline(data: Path) -> None:
    settings = load_settings(data_dir=data)
    assert planes.ensure_ray_token(settings) and not planes.ensure_ray_token(settings)
    path = planes.ray_token_path(settings)
    token = path.read_text()
    assert len(token) == 64 and "\n" not in token and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert planes.ray_token(settings) == token


def test_a_worker_without_the_heads_token_is_told_where_it_comes_from(data: Path) -> None:
    with pytest.raises(planes.PlaneError, match="copy the head's data/secrets/ray.token"):
        planes.ray_token(load_settings(data_dir=data))


def test_every_ray_process_gets_the_token_and_on_a_lan_address_tls(data: Path) -> None:
    loopback = runtime_env_vars(load_settings(data_dir=data))
    assert loopback["RAY_AUTH_MODE"] == "token" and loopback["RAY_AUTH_TOKEN_PATH"].endswith("ray.token")
    assert loopback["RAY_USE_TLS"] == "0"  # one machine: nothing else on the wire
    assert loopback["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == "1"
    lan = runtime_env_vars(load_settings(data_dir=data, ray={"host": "10.0.0.7"}))
    files = tls.paths(load_settings(data_dir=data))
    assert lan["RAY_USE_TLS"] == "1" and lan["RAY_TLS_CA_CERT"] == str(files.ca_cert)
    assert lan["RAY_TLS_SERVER_CERT"] == str(files.ray_cert)
    off = runtime_env_vars(load_settings(data_dir=data, ray={"token_auth": False}))
    assert off["RAY_AUTH_MODE"] == "disabled"  # set either way: the caller's shell never decides


def test_serve_requires_client_certificates_only_with_mtls(data: Path) -> None:
    settings = load_settings(data_dir=data)
    options = planes.serve_http_options(settings)
    files = tls.paths(settings)
    assert options["ssl_ca_certs"] == str(files.ca_cert) and options["ssl_certfile"] == str(files.serve_cert)
    assert planes.serve_env(settings)["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"].endswith(
        "require_client_certificates"
    )
    plain = load_settings(data_dir=data, tls={"serve_mtls": False})
    assert "ssl_ca_certs" not in planes.serve_http_options(plain)
    assert planes.serve_env(plain)["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == ""
    assert plain.serve_url.startswith("http://") and settings.serve_url.startswith("https://")


def test_prepare_makes_certificates_and_token_once(data: Path) -> None:
    settings = load_settings(data_dir=data)
    made = planes.prepare(settings)
    assert any("ray.token" in line for line in made) and any("ca.crt" in line for line in made)
    assert planes.prepare(settings) == []


def test_an_edge_host_without_the_cas_key_uses_copied_files_or_says_what_to_copy(data: Path) -> None:
    head = load_settings(data_dir=data)
    planes.prepare(head)
    tls.paths(head).ca_key.unlink()  # an edge host gets certificates, never the CA's key
    assert planes.prepare_edge(head) == []
    tls.paths(head).ingress_client_key.unlink()
    with pytest.raises(planes.PlaneError, match="ingress-client.key"):
        planes.prepare_edge(head)
