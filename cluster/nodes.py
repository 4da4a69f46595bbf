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
import socket
import sys
import time
from pathlib import Path

from cluster import processes
from cluster.local import runtime_env_vars, say
from cluster.settings import RaychatSettings
from deployments.config import socket_safe_dir, temp_dir

WORKER_PREFIX = "ray-worker-"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
# Ray's sockets live under the temp dir; the same 36-byte budget as the head's (see local.py).
_MAX_RAY_TEMP_LEN = 36
_STARTED = "Ray runtime started"


class NodeError(processes.ProcessError):
    pass


def service_name(name: str) -> str:
    if not _NAME.match(name):
        raise NodeError(f"node name {name!r}: use 1-16 lowercase letters, digits or '-'")
    return WORKER_PREFIX + name


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))  # free on every interface, so on the node address too
        return int(sock.getsockname()[1])


def join_argv(
    settings: RaychatSettings,
    *,
    address: str,
    name: str,
    num_gpus: int,
    num_cpus: int | None,
    resources: dict[str, float] | None = None,
) -> list[str]:
    host = settings.ray.host
    head_host = address.rsplit(":", 1)[0].strip("[]")
    if head_host in ("127.0.0.1", "localhost", "::1"):
        ray_cli = [sys.executable, "-m", "cluster.ray_worker"]  # keeps the loopback address as given
    else:
        ray_cli = [str(Path(sys.executable).parent / "ray")]
    argv = [
        *ray_cli,
        "start",
        "--address",
        address,
        "--block",
        "--node-ip-address",
        host,
        "--num-gpus",
        str(num_gpus),
        "--object-store-memory",
        str(settings.ray.object_store_memory_mb * 1024 * 1024),
        "--temp-dir",
        str(socket_safe_dir(settings.data_dir, f"rw-{name}", _MAX_RAY_TEMP_LEN)),
        "--disable-usage-stats",
    ]
    # Fixed agent ports, chosen now: the default listen port would clash with another node on the same
    # host, and with dynamic ports the raylet waits only 15 s for the agents' port files, then exits
    # (ray-project/ray#65983), which a busy 2-core host does not always meet.
    for flag in (
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    ):
        argv += [flag, str(_free_port())]
    if num_cpus is not None:
        argv += ["--num-cpus", str(num_cpus)]
    if resources:
        argv += ["--resources", json.dumps(resources)]
    return argv


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
    argv = join_argv(
        settings, address=target, name=name, num_gpus=num_gpus, num_cpus=num_cpus, resources=resources
    )
    temp_dir(settings.data_dir).mkdir(parents=True, exist_ok=True)
    log = log_file(settings, name)
    offset = log.stat().st_size if log.exists() else 0
    say(f"node {name!r} joining {target} with {num_gpus} GPU(s)")
    # With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (how a loopback head keeps Ray off other interfaces)
    # `ray start --address` refuses to start a worker at all; the worker's own addresses are still
    # pinned by --node-ip-address.
    env = {**processes.BASE_ENV, **runtime_env_vars(settings), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    pid = processes.spawn(settings.run_dir, service, argv, log_file=log, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with log.open("rb") as handle:
            handle.seek(offset)
            if _STARTED.encode() in handle.read():
                return pid
        if not processes.is_running(settings.run_dir, service):
            raise NodeError(f"node {name!r} exited while joining{_raylet_failure(argv)}; see {log}")
        time.sleep(0.5)
    processes.stop(settings.run_dir, service)
    raise NodeError(f"node {name!r} did not join within {timeout:.0f}s{_raylet_failure(argv)}; see {log}")


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
    return processes.stop(settings.run_dir, service_name(name), timeout=30)


def local_workers(settings: RaychatSettings) -> list[str]:
    """Names of the workers this data dir started on this host."""
    if not settings.run_dir.exists():
        return []
    names = (
        p.name[len(WORKER_PREFIX) : -len(".pid")] for p in settings.run_dir.glob(f"{WORKER_PREFIX}*.pid")
    )
    return sorted(name for name in names if processes.is_running(settings.run_dir, service_name(name)))
