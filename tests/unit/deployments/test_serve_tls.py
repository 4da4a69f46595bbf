"""The proxy callback makes uvicorn require a client certificate whenever Serve gives it a CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import uvicorn.config

from cluster import tls
from cluster.settings import load_settings
from deployments import serve_tls


def test_a_ca_makes_client_certificates_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn.config, "create_ssl_context", uvicorn.config.create_ssl_context)
    files, _ = tls.ensure(load_settings(data_dir=tmp_path))
    args = dict(
        certfile=files.serve_cert,
        keyfile=files.serve_key,
        password=None,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        cert_reqs=ssl.CERT_NONE,
        ciphers=None,
    )
    assert uvicorn.config.create_ssl_context(**args, ca_certs=files.ca_cert).verify_mode == ssl.CERT_NONE
    assert serve_tls.require_client_certificates() == []  # what Serve expects: no middleware
    assert serve_tls.require_client_certificates() == []  # a second call does not wrap twice
    required = uvicorn.config.create_ssl_context(**args, ca_certs=files.ca_cert)
    assert required.verify_mode == ssl.CERT_REQUIRED and required.minimum_version == ssl.TLSVersion.TLSv1_2
    assert uvicorn.config.create_ssl_context(**args, ca_certs=None).verify_mode == ssl.CERT_NONE
