"""The stack a benchmark runs against: the running one, or one brought up for the run and stopped after."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from cluster import tls
from cluster.settings import RaychatSettings


@contextmanager
def running_stack(settings: RaychatSettings) -> Iterator[str]:
    """Yields the service URL; stops the stack afterwards only if this run started it."""
    from cluster import local, processes

    was_running = processes.is_running(settings.run_dir, local.RAY_HEAD)
    url = local.up(settings)
    try:
        yield url
    finally:
        if not was_running:
            local.down(settings)


def nginx_https(settings: RaychatSettings, url: str) -> tuple[str, ssl.SSLContext | bool]:
    """Nginx's HTTPS URL and a context that trusts raychat's CA, when TLS is on and Nginx runs: benchmarks
    measure the path users take (HTTPS at the edge, mTLS on to the gateway). Else `url` as it is."""
    https = settings.https_url()
    if https and settings.ingress.kind in ("nginx", "both"):
        return https, ssl.create_default_context(cafile=str(tls.paths(settings).ca_cert))
    return url, True
