"""The locks on Ray's and Serve's planes, from settings: Ray's token (`RAY_AUTH_MODE=token`, the token in
`data/secrets/ray.token`), TLS on Ray's gRPC channels (`RAY_USE_TLS`), and HTTPS with required client
certificates at Serve's HTTP proxy. `prepare` makes what a head needs before anything starts; the
`*_env` functions give every Ray process (head, workers, drivers, `ray job submit`) the same view."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path
from typing import Any

from cluster import redis_server, tls
from cluster.ingress import edge
from cluster.processes import ProcessError
from cluster.settings import RaychatSettings
from deployments.gateway.auth.secrets import read_secret, write_secret
from deployments.serve_tls import CALLBACK

RAY_TOKEN_FILE = "ray.token"


class PlaneError(ProcessError):
    """A plane cannot be locked as the settings ask (a worker without the head's token, ...)."""


def ray_token_path(settings: RaychatSettings) -> Path:
    return settings.secrets_dir / RAY_TOKEN_FILE


def ensure_ray_token(settings: RaychatSettings) -> bool:
    """Makes the cluster's token on the head's first start (256 bits, as Ray's own generator); True if
    it was made now. Written without a trailing newline: the token is the file's whole content."""
    path = ray_token_path(settings)
    if read_secret(path) is not None:
        return False
    write_secret(path, secrets.token_hex(32), newline=False)
    return True


def ray_token(settings: RaychatSettings) -> str:
    """The token, for an HTTP call to the dashboard or the Jobs API (`Authorization: Bearer`)."""
    token = read_secret(ray_token_path(settings))
    if token is None:
        raise PlaneError(
            f"{ray_token_path(settings)} is missing: start the head with `raychat up` first, or copy the "
            "head's data/secrets/ray.token to this machine's data dir (mode 0600)"
        )
    return token


def ray_env(settings: RaychatSettings) -> dict[str, str]:
    """Each switch set either way: a value in the caller's shell (or a parent raychat process) never
    decides for the settings."""
    env: dict[str, str] = {"RAY_AUTH_MODE": "disabled", "RAY_USE_TLS": "0"}
    if settings.ray.token_auth:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(ray_token_path(settings))
    if settings.ray.tls_on:
        files = tls.paths(settings)
        env.update(
            RAY_USE_TLS="1",
            RAY_TLS_SERVER_CERT=str(files.ray_cert),
            RAY_TLS_SERVER_KEY=str(files.ray_key),
            RAY_TLS_CA_CERT=str(files.ca_cert),
        )
    return env


def serve_env(settings: RaychatSettings) -> dict[str, str]:
    """Serve runs the callback in every proxy process: it makes the CA in `http_options` required (set
    either way, so that no parent process's value decides)."""
    return {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": CALLBACK if edge.serve_mtls(settings) else ""}


def serve_http_options(settings: RaychatSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"host": settings.serve.host, "port": settings.serve.port}
    if edge.serve_mtls(settings):
        files = tls.paths(settings)
        options.update(
            ssl_certfile=str(files.serve_cert),
            ssl_keyfile=str(files.serve_key),
            ssl_ca_certs=str(files.ca_cert),
        )
    return options


def serve_client_options(settings: RaychatSettings) -> dict[str, Any]:
    """httpx options for raychat's own tools that call Serve directly (the ingress's client
    certificate, and Serve's server certificate checked against raychat's CA)."""
    if not edge.serve_mtls(settings):
        return {}
    files = tls.paths(settings)
    return {
        "verify": str(files.ca_cert),
        "cert": (str(files.ingress_client_cert), str(files.ingress_client_key)),
    }


def client_context(settings: RaychatSettings, *, client_certificate: bool = False) -> ssl.SSLContext | None:
    """For raychat's own HTTPS checks (readiness, the ingress's redirect): trust raychat's CA, and present
    the ingress's client certificate where Serve's mTLS port is called. None with TLS off or a site
    certificate (the system's trust store then applies)."""
    if not settings.tls.enabled:
        return None
    files = tls.paths(settings)
    context = ssl.create_default_context(cafile=str(files.ca_cert) if files.ca_cert.exists() else None)
    if client_certificate and edge.serve_mtls(settings):
        context.load_cert_chain(files.ingress_client_cert, files.ingress_client_key)
    return context


def prepare(settings: RaychatSettings) -> list[str]:
    """What a head needs before Ray starts: certificates (when any plane uses them) and Ray's token.
    Returns a line for each thing it made."""
    made: list[str] = []
    if settings.tls.enabled or settings.ray.tls_on or redis_server.uses_tls(settings):
        _, made = tls.ensure(settings)
    if settings.ray.token_auth and ensure_ray_token(settings):
        made.append(f"created Ray's token {ray_token_path(settings)} (mode 0600)")
    return made


def prepare_edge(settings: RaychatSettings) -> list[str]:
    """An edge host of its own: the certificates it serves and presents (made, or checked present when
    they come from the head: a generated CA's key stays where it was made)."""
    if not settings.tls.enabled:
        return []
    files = tls.paths(settings)
    if files.ca_key.exists():
        _, made = tls.ensure(settings)
        return made
    needed = [files.ca_cert, files.server_cert, files.server_key]
    if edge.serve_mtls(settings):
        needed += [files.ingress_client_cert, files.ingress_client_key]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise PlaneError(
            f"TLS files missing on this edge host: {', '.join(missing)}; copy them from the head's "
            "data/tls/ (keys mode 0600), or set tls.site_cert and tls.site_key"
        )
    return []
