"""Client certificates required at Serve's HTTP proxy (mTLS from the ingress).

Serve's `http_options.ssl_ca_certs` is documented as the CA for client-certificate verification, but Ray
2.60 hands it to uvicorn without `ssl_cert_reqs`, whose default (CERT_NONE) never asks the client for a
certificate: anyone who reaches the port gets in. Serve runs `require_client_certificates` in each proxy
process before the server starts (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`); it makes uvicorn require a
certificate signed by that CA whenever one is given, and TLS 1.2 at least. It adds no middleware.
"""

from __future__ import annotations

import ssl
from typing import Any

CALLBACK = "deployments.serve_tls.require_client_certificates"


def require_client_certificates() -> list[Any]:
    import uvicorn.config

    original = uvicorn.config.create_ssl_context
    if getattr(original, "raychat_mtls", False):
        return []

    def create_ssl_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = original(*args, **kwargs)
        if kwargs.get("ca_certs") or (len(args) > 5 and args[5]):
            context.verify_mode = ssl.CERT_REQUIRED
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    create_ssl_context.raychat_mtls = True  # type: ignore[attr-defined]
    uvicorn.config.create_ssl_context = create_ssl_context  # type: ignore[assignment]
    return []
