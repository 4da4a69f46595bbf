"""What Nginx and Traefik share at the edge: the TLS policy, which certificate they serve, whether plain
HTTP still serves (the loopback quick start) or only redirects, and mTLS towards Serve."""

from __future__ import annotations

from pathlib import Path

from cluster import tls
from cluster.plane_settings import is_loopback
from cluster.settings import RaychatSettings

PROTOCOLS = ("TLSv1.2", "TLSv1.3")
# Mozilla's "intermediate" TLS 1.2 suites (forward secrecy, AEAD only); TLS 1.3 suites are all modern.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
# The same suites under the IANA names Go (Traefik) uses.
TLS12_CIPHERS_IANA = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)


def plain_http_serves(settings: RaychatSettings) -> bool:
    """Plain HTTP answers requests only without TLS or on loopback; anywhere else it only redirects."""
    return not settings.tls.enabled or is_loopback(settings.ingress.host)


def serve_mtls(settings: RaychatSettings) -> bool:
    return settings.tls.enabled and settings.tls.serve_mtls


def server_pair(settings: RaychatSettings) -> tuple[Path, Path]:
    """The certificate and key the edge serves: the site's when configured, else the generated one."""
    files = tls.paths(settings)
    return files.server_cert, files.server_key
