"""`raychat loadtest` / `make loadtest TIER=1|2|3 INGRESS=nginx|traefik|direct`: the Locust suite in
`loadtests/`, headless, against the running stack through the chosen entry point; Locust's CSV and HTML
land in `loadtests/results/`. Locust calls the API with the service key (`RAYCHAT_API_KEY`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cluster import credentials, planes
from cluster.settings import RaychatSettings

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"
RESULTS = LOADTESTS / "results"


def target_url(settings: RaychatSettings, ingress: str) -> str:
    ing = settings.ingress
    if ingress == "nginx":
        return f"http://{ing.host}:{ing.nginx_port}"
    if ingress == "traefik":
        return f"http://{ing.host}:{ing.traefik_port}"
    if ingress == "direct":
        return settings.serve_url
    raise ValueError(f"unknown ingress {ingress!r}; use nginx, traefik or direct")


def locust_command(
    host: str,
    prefix: Path,
    *,
    users: int | None = None,
    spawn_rate: float | None = None,
    duration: str | None = None,
    user_classes: list[str] | None = None,
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOADTESTS / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
        "--stop-timeout",
        "30",
    ]
    if users is not None:
        argv += ["-u", str(users), "-r", str(spawn_rate or users), "-t", duration or "30s"]
    return argv + list(user_classes or [])


def locust_env(settings: RaychatSettings, config: Path | None = None) -> dict[str, str]:
    """This process's environment for Locust, with the service key (none when auth is off), without a
    tier of the caller's shell, and with `config` as the suite's config file if given."""
    env = {**os.environ}
    env.pop("RAYCHAT_TIER", None)
    env.pop("RAYCHAT_API_KEY", None)
    key = credentials.service_key(settings)
    if key:
        env["RAYCHAT_API_KEY"] = key
    if config is not None:
        env["RAYCHAT_LOADTEST_CONFIG"] = str(config)
    tls_options = planes.serve_client_options(settings)  # for `--ingress direct` with mTLS on
    if tls_options:
        env["RAYCHAT_TLS_CA_CERT"] = tls_options["verify"]
        env["RAYCHAT_TLS_CLIENT_CERT"], env["RAYCHAT_TLS_CLIENT_KEY"] = tls_options["cert"]
    return env


def run(
    settings: RaychatSettings,
    *,
    tier: str | None,
    ingress: str,
    users: int | None = None,
    duration: str | None = None,
    user_classes: list[str] | None = None,
    config: Path | None = None,
    name: str | None = None,
) -> int:
    """Runs Locust to completion; its exit code (1 when any request failed)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    default_name = f"users{users}-{ingress}" if users is not None else f"tier{tier}-{ingress}"
    prefix = RESULTS / (name or default_name)
    env = locust_env(settings, config)
    if tier and users is None:
        env["RAYCHAT_TIER"] = tier
    argv = locust_command(
        target_url(settings, ingress), prefix, users=users, duration=duration, user_classes=user_classes
    )
    print(f"[loadtest] {' '.join(argv)}", file=sys.stderr, flush=True)
    return subprocess.run(argv, env=env, check=False).returncode
