"""A Ray node on this host, head (`raychat up`) or worker (`raychat join`): its `ray start` command line,
the environment Ray and everything it starts run in, its short temp dir, its pid file, and the console
lines `raychat` prints.

`local` (the head and the app) and `nodes` (workers) both build on this module and never on each other.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from cluster import planes, processes
from cluster.settings import RaychatSettings
from deployments.config import socket_safe_dir, temp_dir

WORKER_PREFIX = "ray-worker-"
# Unix socket paths under Ray's temp dir must stay under ~107 bytes; Ray adds ~70 of its own.
_MAX_RAY_TEMP_LEN = 36
# A raylet ends its workers and their vLLM engines before it exits itself.
_STOP_GRACE_S = 30


def say(message: str) -> None:
    print(f"[raychat] {message}", flush=True)


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def runtime_env_vars(settings: RaychatSettings) -> dict[str, str]:
    """Environment for Ray and everything it starts: offline, loopback, caches inside the data dir."""
    data = settings.data_dir
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(data / "cache" / "huggingface"),
        "XDG_CACHE_HOME": str(data / "cache"),
        "VLLM_CACHE_ROOT": str(data / "cache" / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(data / "cache" / "torchinductor"),
        "TRITON_CACHE_DIR": str(data / "cache" / "triton"),
        "TMPDIR": str(temp_dir(data)),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")])),
    }
    if settings.ray.host.startswith("127."):
        # A loopback head: keep Ray from "resolving" 127.0.0.1 to the host's outward address (which
        # also stops `ray start` from adding workers; `raychat join` handles that). On a LAN address
        # Ray's Linux default (clusters enabled) stays.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env["VLLM_HOST_IP"] = settings.ray.host
    env.update(settings.serve.env())
    env.update(planes.ray_env(settings))
    env.update(planes.serve_env(settings))
    return env


def start_env(settings: RaychatSettings, *, worker: bool = False) -> dict[str, str]:
    """The environment of a `ray start` process: this program's own (not what imports added) plus
    `runtime_env_vars`."""
    env = {**processes.BASE_ENV, **runtime_env_vars(settings)}
    if worker:
        # With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (how a loopback head keeps Ray off other interfaces)
        # `ray start --address` refuses to start a worker at all; the worker's own addresses are still
        # pinned by --node-ip-address.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    return env


def head_temp_dir(settings: RaychatSettings) -> Path:
    return socket_safe_dir(settings.data_dir, "ray", _MAX_RAY_TEMP_LEN)


def worker_temp_dir(settings: RaychatSettings, name: str) -> Path:
    return socket_safe_dir(settings.data_dir, f"rw-{name}", _MAX_RAY_TEMP_LEN)


def _node_flags(settings: RaychatSettings, *, num_gpus: int, num_cpus: float | None, temp: Path) -> list[str]:
    """The `ray start` flags a head and a worker share."""
    flags = [
        "--block",
        "--node-ip-address",
        settings.ray.host,
        "--num-gpus",
        str(num_gpus),
        "--object-store-memory",
        str(settings.ray.object_store_memory_mb * 1024 * 1024),
        "--temp-dir",
        str(temp),
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        flags += ["--num-cpus", str(num_cpus)]
    return flags


def _ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


def head_argv(settings: RaychatSettings) -> list[str]:
    ray = settings.ray
    return [
        _ray_bin(),
        "start",
        "--head",
        "--port",
        str(ray.port),
        "--dashboard-host",
        ray.host,
        "--dashboard-port",
        str(ray.dashboard_port),
        *_node_flags(settings, num_gpus=ray.num_gpus, num_cpus=ray.num_cpus, temp=head_temp_dir(settings)),
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))  # free on every interface, so on the node address too
        return int(sock.getsockname()[1])


def worker_argv(
    settings: RaychatSettings,
    *,
    address: str,
    name: str,
    num_gpus: int,
    num_cpus: int | None,
    resources: dict[str, float] | None = None,
) -> list[str]:
    """`ray start` for a worker named `name` joining the head at `address`."""
    head_host = address.rsplit(":", 1)[0].strip("[]")
    if head_host in ("127.0.0.1", "localhost", "::1"):
        ray_cli = [sys.executable, "-m", "cluster.ray_worker"]  # keeps the loopback address as given
    else:
        ray_cli = [_ray_bin()]
    argv = [
        *ray_cli,
        "start",
        "--address",
        address,
        *_node_flags(settings, num_gpus=num_gpus, num_cpus=num_cpus, temp=worker_temp_dir(settings, name)),
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
    if resources:
        argv += ["--resources", json.dumps(resources)]
    return argv


def local_workers(settings: RaychatSettings) -> list[str]:
    """Names of the workers this data dir started on this host (their pid files, `WORKER_PREFIX<name>`)."""
    if not settings.run_dir.exists():
        return []
    names = (
        p.name[len(WORKER_PREFIX) : -len(".pid")] for p in settings.run_dir.glob(f"{WORKER_PREFIX}*.pid")
    )
    return sorted(name for name in names if processes.is_running(settings.run_dir, WORKER_PREFIX + name))


def stop(settings: RaychatSettings, service: str) -> bool:
    """Stop a node this host started (its raylet, workers and engines). True if it was running."""
    return processes.stop(settings.run_dir, service, timeout=_STOP_GRACE_S)
