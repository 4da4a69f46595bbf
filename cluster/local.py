"""Bring the whole stack up and down on one host: Ray head, Serve app, ingress.

`up` is idempotent: a running Ray head, an app deployed with the same config and a running proxy are
left as they are. `down` stops only what `up` recorded (pid files under data/run) and keeps the data.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import model_store, planes, processes, ray_node, redis_server
from cluster.ingress import nginx, routing, traefik
from cluster.ray_node import project_root, runtime_env_vars, say
from cluster.settings import RaychatSettings
from cluster.waiting import wait_until
from deployments.config import AppConfig, LLMSettings, temp_dir
from deployments.gateway.redis_state import safe_url

RAY_HEAD = "ray-head"
_APP_RECORD = "app.json"
# What the last `up` in this process found or made of the keys (None: auth is off); `cli` prints it.
last_bootstrap: Any = None


def start_ray_head(settings: RaychatSettings) -> bool:
    if settings.ray.address:
        return False  # an existing cluster: nothing to start
    if processes.is_running(settings.run_dir, RAY_HEAD):
        return False
    ray_node.head_temp_dir(settings).mkdir(parents=True, exist_ok=True)
    temp_dir(settings.data_dir).mkdir(parents=True, exist_ok=True)
    say(f"starting the Ray head on {settings.ray_address}")
    log = settings.logs_dir / "ray-head.log"
    argv = ray_node.head_argv(settings)
    processes.spawn(settings.run_dir, RAY_HEAD, argv, log_file=log, env=ray_node.start_env(settings))

    def listening() -> bool:
        if processes.port_open(settings.ray.host, settings.ray.port):
            return True
        if not processes.is_running(settings.run_dir, RAY_HEAD):
            raise processes.ProcessError(f"ray start exited; see {log}")
        return False

    wait_until(
        listening,
        timeout_s=90,
        interval_s=0.5,
        what=f"the Ray head opens port {settings.ray.port}",
        error=processes.ProcessTimeout,
    )
    return True


def export_environment(settings: RaychatSettings) -> None:
    """Put the runtime environment into this process; must run before `ray` is imported, since Ray
    reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER at import to keep 127.0.0.1 from being 'resolved' away."""
    os.environ.update(runtime_env_vars(settings))


def connect(settings: RaychatSettings) -> None:
    export_environment(settings)
    import ray

    if ray.is_initialized():
        return
    ray.init(
        address=settings.ray_address,
        namespace=settings.ray.namespace,
        log_to_driver=False,
        logging_level="WARNING",
    )


def _config_digest(app_config: dict[str, Any]) -> str:
    code = hashlib.sha256()
    # Every module the app runs, subpackages (deployments/gateway/...) included, and the console's files.
    console = (project_root() / "deployments" / "gateway" / "console" / "static").glob("*")
    for path in sorted(
        [
            *(project_root() / "deployments").rglob("*.py"),
            *(project_root() / "knowledge").rglob("*.py"),
            *(p for p in console if p.is_file()),
        ]
    ):
        code.update(path.read_bytes())
    code.update(json.dumps(app_config, sort_keys=True).encode())
    return code.hexdigest()


def _sync_digest(settings: RaychatSettings) -> str:
    code = hashlib.sha256(settings.knowledge.model_dump_json().encode())
    for path in sorted([project_root() / "cluster" / "kb.py", *(project_root() / "knowledge").rglob("*.py")]):
        code.update(path.read_bytes())
    return code.hexdigest()


def app_status(settings: RaychatSettings, app_name: str | None = None) -> str | None:
    from ray import serve

    try:
        apps = serve.status().applications
    except Exception:
        return None
    app = apps.get(app_name or routing.live_app(settings))
    return str(getattr(app.status, "value", app.status)) if app else None


def model_version(llm: LLMSettings, model_path: Path) -> str:
    """A digest of what decides the model's answers: its weights (where they are, their checksum, the
    4-bit export) and the engine options that change outputs; not the ones that only change speed."""
    from deployments.llm import engine_kwargs

    speed_only = {
        "max_num_seqs",
        "max_num_batched_tokens",
        "enforce_eager",
        "gpu_memory_utilization",
        "tensor_parallel_size",
        "enable_prefix_caching",
    }
    material = {
        "model": str(model_path),
        "sha256": llm.model_sha256,
        "weights": llm.weights,
        "engine": {k: v for k, v in engine_kwargs(llm).items() if k not in speed_only},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:12]


def app_config(settings: RaychatSettings, model_path: Path) -> tuple[AppConfig, str]:
    """The app's config as deployed, and the digest of it and of the code; its version is the settings'
    `serve.release`, else the digest's first 12 characters."""
    # The Redis the app uses: a local server's TLS URL and password file (never the password itself).
    config = settings.app_config(model_path).model_copy(
        update={
            "redis": redis_server.client_settings(settings),
            "model_version": model_version(settings.llm, model_path),
        }
    )
    digest = _config_digest(config.model_dump(mode="json"))
    return config.model_copy(update={"version": settings.serve.release or digest[:12]}), digest


@dataclass
class Deploying:
    """A `serve.run` under way in its own thread (it blocks until every replica is ready)."""

    app_name: str
    worker: threading.Thread
    failure: list[BaseException] = field(default_factory=list)

    def done(self) -> bool:
        return not self.worker.is_alive()

    def raise_failure(self) -> None:
        if self.failure:
            raise processes.ProcessError(f"deploying '{self.app_name}' failed: {self.failure[0]}")


def start_app(settings: RaychatSettings, config: AppConfig, app_name: str, route_prefix: str) -> Deploying:
    """`serve.run` of the app under `app_name` and `route_prefix`, started; into a running app of that
    name it replaces every replica (`rollout`: new ones start before old ones stop)."""
    from ray import serve

    from deployments.app import build_app

    serve.start(
        proxy_location=settings.serve.proxy_location,
        http_options=planes.serve_http_options(settings),
    )
    app_config = config.model_dump(mode="json")
    failure: list[BaseException] = []

    def run() -> None:
        try:
            serve.run(build_app(app_config), name=app_name, route_prefix=route_prefix)
        except BaseException as exc:  # reported by the waiting thread
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return Deploying(app_name, worker, failure)


def run_app(settings: RaychatSettings, config: AppConfig, app_name: str, route_prefix: str) -> None:
    """`start_app`, waiting (with progress) until every deployment is ready; ProcessError if it cannot
    start."""
    deploying = start_app(settings, config, app_name, route_prefix)
    wait_until(
        deploying.done,
        timeout_s=settings.ray.start_timeout_s,
        interval_s=0.5,
        what=f"the app '{app_name}' has started",
        on_tick=lambda s: say(f"  waiting for replicas ({s:.0f}s): {deployment_summary(settings, app_name)}"),
        tick_s=10,
        error=processes.ProcessTimeout,
    )
    deploying.raise_failure()


def deploy(settings: RaychatSettings, model_path: Path) -> bool:
    """Deploy the Serve app into the live slot unless the same config already runs there; True if it was
    (re)deployed. (A new version while clients are served: `raychat upgrade`.)"""
    config, digest = app_config(settings, model_path)
    colours = routing.load(settings)
    live = colours.live
    record = settings.run_dir / _APP_RECORD
    previous = json.loads(record.read_text()).get("digest") if record.exists() else None
    if previous == digest and app_status(settings, live.app) == "RUNNING":
        return False
    say(f"deploying '{live.app}' (model {settings.llm.model_id}, profile {settings.profile})")
    run_app(settings, config, live.app, live.prefix)
    record_app(settings, digest)
    routing.save(
        settings,
        colours.model_copy(
            update={
                "rolling": False,  # a rolling upgrade that was killed: `up` has just redeployed
                # `up` deploys the settings the CLI found, not a file an upgrade recorded.
                "live": live.model_copy(
                    update={
                        "version": config.version,
                        "model_id": settings.llm.model_id,
                        "config_file": None,
                        "store_dir": str(config.store_dir),
                    }
                ),
            }
        ),
    )
    return True


def follow_folders(settings: RaychatSettings, *, restart: bool) -> None:
    """Knowledge bases with a source_folder follow it from now on, through the live app, with the code
    and settings of this start: a running sync actor is replaced when they changed (or `restart`)."""
    from cluster.kb import start_sync_actor

    sync_record = settings.run_dir / "kb-sync.json"
    digest = _sync_digest(settings)
    previous = json.loads(sync_record.read_text()).get("digest") if sync_record.exists() else None
    start_sync_actor(settings, restart=restart or previous != digest)
    sync_record.write_text(json.dumps({"digest": digest}))


def record_app(settings: RaychatSettings, digest: str) -> None:
    """What runs in the live slot, so that `up` with the same settings and code leaves it alone."""
    record = settings.run_dir / _APP_RECORD
    record.write_text(json.dumps({"digest": digest, "deployed_at": time.time()}))


def deployment_summary(settings: RaychatSettings, app_name: str | None = None) -> str:
    from ray import serve

    try:
        app = serve.status().applications.get(app_name or routing.live_app(settings))
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    if app is None:
        return "not deployed"
    parts = []
    for name, dep in app.deployments.items():
        counts = {str(getattr(state, "value", state)): n for state, n in dep.replica_states.items()}
        parts.append(f"{name} {getattr(dep.status, 'value', dep.status)} {counts}")
    return "; ".join(parts) or str(app.status)


def replica_nodes(settings: RaychatSettings) -> dict[str, dict[str, int]]:
    """Live replicas of the app per deployment and node: {deployment: {node_id: count}}."""
    from ray.util.state import list_actors

    prefix = f"ServeReplica:{routing.live_app(settings)}:"
    placement: dict[str, dict[str, int]] = {}
    for actor in list_actors(
        address=settings.ray_address,  # never "whichever Ray instance this host runs"
        filters=[("state", "=", "ALIVE")],
        limit=10_000,
        raise_on_missing_output=False,
    ):
        if actor.class_name.startswith(prefix) and actor.node_id:
            per_node = placement.setdefault(actor.class_name[len(prefix) :], {})
            per_node[actor.node_id] = per_node.get(actor.node_id, 0) + 1
    return placement


def ingress_modules(settings: RaychatSettings) -> list[Any]:
    kind = settings.ingress.kind
    return {"nginx": [nginx], "traefik": [traefik], "both": [nginx, traefik], "none": []}[kind]


def up(settings: RaychatSettings) -> str:
    for sub in ("run", "logs", "models", "cache", "sources"):
        (settings.data_dir / sub).mkdir(parents=True, exist_ok=True)
    temp_dir(settings.data_dir).mkdir(parents=True, exist_ok=True)
    model_path = model_store.resolve_model(
        settings.llm.model_source,
        settings.data_dir / "models",
        expected_sha256=settings.llm.model_sha256,
        weights=settings.llm.weights,
    )
    say(f"model: {model_path}")
    for line in planes.prepare(settings):  # certificates and Ray's token: before any process uses them
        say(line)
    if redis_server.start(settings):
        say(f"valkey (Redis-compatible) started for {redis_server.client_settings(settings).url}")
    global last_bootstrap
    if settings.auth.enabled:
        from cluster import keys

        last_bootstrap = keys.bootstrap(settings)  # pepper, admin key, service key: before any replica
    start_ray_head(settings)
    connect(settings)
    redeployed = deploy(settings, model_path)
    follow_folders(settings, restart=redeployed)
    for module in ingress_modules(settings):
        if module.start(settings):
            say(f"{module.NAME} started")
    url = settings.public_url()
    context = planes.client_context(settings, client_certificate=True)  # Serve's port itself when no ingress
    processes.wait_http(
        f"{url}/readyz", timeout=settings.ray.start_timeout_s, what="the service", context=context
    )
    return url


def down(settings: RaychatSettings) -> list[str]:
    import ray

    if ray.is_initialized():
        ray.shutdown()  # a driver still attached when the GCS goes away would be killed by Ray
    stopped = []
    for module in (nginx, traefik):
        if module.stop(settings):
            stopped.append(module.NAME)
    for service in [ray_node.WORKER_PREFIX + name for name in ray_node.local_workers(settings)]:
        if ray_node.stop(settings, service):
            stopped.append(service)
    if ray_node.stop(settings, RAY_HEAD):
        stopped.append(RAY_HEAD)
    if redis_server.stop(settings):
        stopped.append(redis_server.NAME)
    (settings.run_dir / _APP_RECORD).unlink(missing_ok=True)
    (settings.run_dir / "kb-sync.json").unlink(missing_ok=True)
    routing.clear(settings)  # the next `up` deploys into the first slot again
    return stopped


def status(settings: RaychatSettings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "url": settings.public_url(),
        "ray_head": "running" if processes.is_running(settings.run_dir, RAY_HEAD) else "stopped",
        "ingress": {
            m.NAME: "running" if processes.is_running(settings.run_dir, m.NAME) else "stopped"
            for m in (nginx, traefik)
        },
        "redis": {
            "url": safe_url(redis_server.client_settings(settings).url),
            "local_server": "running"
            if processes.is_running(settings.run_dir, redis_server.NAME)
            else "not started",
        },
    }
    if settings.ray.address or report["ray_head"] == "running":
        import ray

        connect(settings)
        placement = replica_nodes(settings)
        report["nodes"] = [
            {
                "node": n["NodeManagerAddress"],
                "node_id": n["NodeID"],
                "head": "node:__internal_head__" in n["Resources"],
                "alive": n["Alive"],
                "resources": n["Resources"],
                "replicas": {
                    dep: nodes[n["NodeID"]] for dep, nodes in placement.items() if n["NodeID"] in nodes
                },
            }
            for n in ray.nodes()
        ]
        report["deployments"] = deployment_summary(settings)
    return report
