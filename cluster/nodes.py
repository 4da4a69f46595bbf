"""Worker nodes: `raychat join` adds a machine's CPUs and GPUs to a running Ray head; `raychat leave`
takes them out again.

On a real cluster each GPU server runs `raychat join --address HEAD:PORT --num-gpus N`; Serve then places
LLM replicas on it (their engine bundles ask for GPUs) while the gateway, retriever and metrics stay on
the head (`placement.services_on_head`). Several workers may join from one host: each gets its own name,
pid file, temp dir and agent port, which is how the multi-node tests run on one machine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cluster import planes, processes, ray_node, tls
from cluster.ray_node import say
from cluster.settings import RaychatSettings
from cluster.waiting import WaitTimeout, wait_until
from deployments.config import temp_dir

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
_STARTED = "Ray runtime started"


class NodeError(processes.ProcessError):
    pass


def service_name(name: str) -> str:
    if not _NAME.match(name):
        raise NodeError(f"node name {name!r}: use 1-16 lowercase letters, digits or '-'")
    return ray_node.WORKER_PREFIX + name


def parse_resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NodeError(f"--resources: not JSON ({exc.msg})") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and v > 0 for k, v in value.items()
    ):
        raise NodeError('--resources: want an object of positive amounts, e.g. {"llm": 2}')
    return {k: float(v) for k, v in value.items()}


def log_file(settings: RaychatSettings, name: str) -> Path:
    return settings.logs_dir / f"{service_name(name)}.log"


def join(
    settings: RaychatSettings,
    *,
    name: str,
    num_gpus: int,
    num_cpus: int | None = None,
    address: str | None = None,
    resources: dict[str, float] | None = None,
    timeout: float = 90,
) -> int:
    """Start a worker raylet that joins `address` (default: this config's head); returns its pid."""
    service = service_name(name)
    if processes.is_running(settings.run_dir, service):
        raise NodeError(
            f"node {name!r} is already running (pid file {processes.pid_file(settings.run_dir, service)})"
        )
    target = address or settings.ray_address
    _check_credentials(settings)
    argv = ray_node.worker_argv(
        settings, address=target, name=name, num_gpus=num_gpus, num_cpus=num_cpus, resources=resources
    )
    temp_dir(settings.data_dir).mkdir(parents=True, exist_ok=True)
    log = log_file(settings, name)
    offset = log.stat().st_size if log.exists() else 0
    say(f"node {name!r} joining {target} with {num_gpus} GPU(s)")
    env = ray_node.start_env(settings, worker=True)
    pid = processes.spawn(settings.run_dir, service, argv, log_file=log, env=env)

    def started() -> bool:
        with log.open("rb") as handle:
            handle.seek(offset)  # only this run's lines: the log is appended to across joins
            if _STARTED.encode() in handle.read():
                return True
        if not processes.is_running(settings.run_dir, service):
            raise NodeError(f"node {name!r} exited while joining{_raylet_failure(argv)}; see {log}")
        return False

    try:
        wait_until(started, timeout_s=timeout, interval_s=0.5, what=f"node {name!r} has joined {target}")
    except WaitTimeout as exc:
        processes.stop(settings.run_dir, service)
        raise NodeError(
            f"node {name!r} did not join within {timeout:.0f}s{_raylet_failure(argv)}; see {log}"
        ) from exc
    return pid


def _check_credentials(settings: RaychatSettings) -> None:
    """A worker joins with the head's token (and Ray's TLS certificates); never makes its own."""
    try:
        if settings.ray.token_auth:
            planes.ray_token(settings)
    except planes.PlaneError as exc:
        raise NodeError(str(exc)) from None
    if settings.ray.tls_on:
        files = tls.paths(settings)
        missing = [p for p in (files.ca_cert, files.ray_cert, files.ray_key) if not p.exists()]
        if missing:
            raise NodeError(
                f"ray.use_tls is on but {', '.join(map(str, missing))} is missing: copy the head's "
                "data/tls/ca.crt, ray-node.crt and ray-node.key (mode 0600) to this machine's data dir"
            )


def _raylet_failure(argv: list[str]) -> str:
    """The raylet's own fatal line, which `ray start` leaves out of its error."""
    temp = Path(argv[argv.index("--temp-dir") + 1])
    raylet_out = temp / "session_latest" / "logs" / "raylet.out"
    if not raylet_out.exists():
        return ""
    fatal = [line for line in raylet_out.read_text(errors="replace").splitlines() if "Check failed" in line]
    return f" (raylet: {fatal[-1].split('Check failed', 1)[1][:300].strip(': ')})" if fatal else ""


def leave(settings: RaychatSettings, name: str) -> bool:
    """Stop a worker started by `join` (its raylet, workers and engines). True if it was running."""
    return ray_node.stop(settings, service_name(name))
