"""`raychat bench multinode` / `make bench-multinode`: raychat on two Ray nodes of this host, one node lost,
and the LLM replicas autoscaled under Locust load, every step timed.

1. start: a head that declares 1 GPU, and a worker node `gpu-a` (1 GPU) joined with `raychat join`. Each
   LLM engine bundle asks for one GPU (`llm.engine_bundle_resources`), so min 2 replicas can only be
   placed one per node; the gateway, retriever and metrics stay on the head.
2. node loss: a spare node `gpu-b` (2 GPUs) joins; then clients send chat requests through nginx while
   `gpu-a` is killed (SIGKILL of its raylet and everything under it, like a power cut). The head's
   replica keeps answering and Serve starts the lost replica on the spare node.
3. scale up: Locust streams chat through nginx; the autoscaler goes from min to max replicas.
4. scale down: the load stops; the replicas go back to min.

The engine runs fp32 + enforce_eager (the quickest start on CPU): the times are about the cluster, not
the engine. Needs the host to itself (refuses while a stack runs on these settings) and stops everything
it started. Writes `results/multinode.{md,json,png}`; exits 1 if a step did not happen in time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from cluster import credentials, loadtest, local, nodes, processes
from cluster.bench.multinode_report import render
from cluster.ingress import routing
from cluster.settings import RaychatSettings, load_settings
from cluster.waiting import WaitTimeout, wait_until

FIRST_WORKER, REPLACEMENT = "gpu-a", "gpu-b"


def log(message: str) -> None:
    print(f"[bench multinode] {message}", file=sys.stderr, flush=True)


class StepTimeout(WaitTimeout):
    pass


def scenario_settings(settings: RaychatSettings, args: argparse.Namespace) -> RaychatSettings:
    """The settings under test: the caller's (data dir, ports, model), with the scenario's cluster shape."""
    llm = settings.llm.model_copy(
        update={
            "dtype": "float32",
            "enforce_eager": True,
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "initial_replicas": None,
            "engine_bundle_resources": {"GPU": 1.0},
            "cpu_kvcache_space_gib": 1,
            "target_ongoing_requests": args.target_ongoing,
            "upscale_delay_s": 3,
            "downscale_delay_s": 10,
        }
    )
    return settings.model_copy(
        update={
            "llm": llm,
            "ray": settings.ray.model_copy(update={"num_gpus": 1, "address": None}),
            "gateway": settings.gateway.model_copy(update={"num_replicas": 1}),
            "ingress": settings.ingress.model_copy(update={"kind": "nginx"}),
        }
    )


@dataclass
class Timeline:
    """LLM replica counts sampled every second, plus named events, all in seconds from the start."""

    started: float = field(default_factory=time.monotonic)
    events: dict[str, float] = field(default_factory=dict)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, running, other states)

    def now(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def mark(self, name: str) -> float:
        self.events[name] = self.now()
        log(f"{self.events[name]:7.1f}s  {name}")
        return self.events[name]


def llm_replica_states(settings: RaychatSettings) -> dict[str, int]:
    from ray import serve

    app = serve.status().applications.get(routing.live_app(settings))
    if app is None:
        return {}
    for name, dep in app.deployments.items():
        if name.startswith("LLM:"):
            return {str(getattr(s, "value", s)): n for s, n in dep.replica_states.items()}
    return {}


class Sampler(threading.Thread):
    def __init__(self, settings: RaychatSettings, timeline: Timeline) -> None:
        super().__init__(daemon=True)
        self.settings, self.timeline = settings, timeline
        self.latest: dict[str, int] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.latest = llm_replica_states(self.settings)
                running = self.latest.get("RUNNING", 0)
                self.timeline.samples.append(
                    (self.timeline.now(), running, sum(self.latest.values()) - running)
                )
            except Exception as exc:  # a busy controller answers late; the next sample will do
                log(f"sampling failed: {type(exc).__name__}")
            self.stopped.wait(1.0)

    def running(self) -> int:
        return self.latest.get("RUNNING", 0)

    def settled(self, count: int) -> bool:
        """Exactly `count` replicas, all running."""
        return self.running() == count and sum(self.latest.values()) == count


def wait_for(what: str, check: Callable[[], object], timeout: float, poll: float = 1.0) -> None:
    wait_until(check, timeout_s=timeout, interval_s=poll, what=what, error=StepTimeout)


def llm_nodes(settings: RaychatSettings) -> dict[str, int]:
    return next(
        (per_node for dep, per_node in local.replica_nodes(settings).items() if dep.startswith("LLM:")), {}
    )


def node_alive(node_id: str) -> bool:
    import ray

    return any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())


def replaced(settings: RaychatSettings, sampler: Sampler, lost: str, count: int) -> bool:
    """`count` replicas running, none of them on the lost node (Serve's status lags the node loss)."""
    live = sum(n for node, n in llm_nodes(settings).items() if node != lost)
    return live == count and sampler.settled(count)


def head_node_id() -> str:
    import ray

    return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])


class ChatClients:
    """Threads that send non-streamed chat requests through the ingress and record every outcome."""

    def __init__(
        self, url: str, model: str, threads: int, pause_s: float, headers: dict[str, str] | None = None
    ) -> None:
        self.url, self.model, self.pause_s = f"{url}/v1/chat/completions", model, pause_s
        self.headers = headers or {}
        self.outcomes: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": f"Name a colour ({index})."}],
            "max_tokens": 16,
            "temperature": 0.7,
            "cache": False,
        }
        with httpx.Client(headers=self.headers, timeout=120) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    status: int | str = client.post(self.url, json=body).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.outcomes.append((sent, status))
                self._stop.wait(self.pause_s)

    def __enter__(self) -> ChatClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=130)

    def summary(self, since: float) -> dict[str, Any]:
        window = [status for sent, status in self.outcomes if sent >= since]
        failed = [s for s in window if s != 200]
        return {
            "requests": len(window),
            "ok": len(window) - len(failed),
            "failed": len(failed),
            "failures": sorted({str(s) for s in failed}),
        }


def retries_counted(url: str, headers: dict[str, str]) -> float:
    """`raychat_llm_replica_retries_total` from the service's /metrics (requests re-sent after a loss)."""
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("raychat_llm_replica_retries_total")
    )


def join_with_retries(settings: RaychatSettings, name: str, num_gpus: int, attempts: int = 3) -> None:
    """`raychat join`, again if the raylet gave up on its agents: on one busy host they sometimes miss
    Ray's fixed 15 s start window (ray-project/ray#65983); separate machines do not share the cores."""
    for attempt in range(1, attempts + 1):
        try:
            nodes.join(settings, name=name, num_gpus=num_gpus, num_cpus=4)
            return
        except nodes.NodeError as exc:
            if attempt == attempts:
                raise
            log(f"  join attempt {attempt} failed ({exc}); trying again")
            nodes.leave(settings, name)


def step_start(settings: RaychatSettings, timeline: Timeline) -> dict[str, Any]:
    local.start_ray_head(settings)
    timeline.mark("head started")
    join_with_retries(settings, FIRST_WORKER, num_gpus=1)
    timeline.mark(f"{FIRST_WORKER} joined")
    url = local.up(settings)
    timeline.mark("app running")
    placement = llm_nodes(settings)
    head = head_node_id()
    return {
        "url": url,
        "deploy_s": round(timeline.events["app running"] - timeline.events[f"{FIRST_WORKER} joined"], 1),
        "llm_replicas_per_node": placement,
        "llm_nodes": len(placement),
        "head_has_llm_replica": head in placement,
        "head_node_id": head,
    }


def step_node_loss(
    settings: RaychatSettings, timeline: Timeline, sampler: Sampler, url: str, args: argparse.Namespace
) -> dict[str, Any]:
    head = head_node_id()
    lost = next(node for node in llm_nodes(settings) if node != head)
    # Spare capacity first (N+1): a node with 2 GPUs joins while the cluster is quiet. On one host a node
    # that starts while the engines are busy misses Ray's fixed 15 s window for its agents
    # (ray-project/ray#65983); separate machines do not share the cores like that.
    join_with_retries(settings, REPLACEMENT, num_gpus=2)
    timeline.mark(f"{REPLACEMENT} joined (spare)")
    auth = credentials.auth_headers(settings)
    retries_before = retries_counted(url, auth)
    with ChatClients(url, settings.llm.model_id, args.clients, args.pause_s, auth) as clients:
        time.sleep(5)  # traffic on both replicas before the loss
        killed_at = time.monotonic()
        killed = processes.kill_now(settings.run_dir, nodes.service_name(FIRST_WORKER))
        t_kill = timeline.mark(f"{FIRST_WORKER} killed")
        log(f"  {killed} processes of node {FIRST_WORKER} killed")
        wait_for("Ray marks the lost node dead", lambda: not node_alive(lost), args.step_timeout)
        t_dead = timeline.mark("lost node marked dead")
        wait_for(
            "the lost replica runs again",
            lambda: replaced(settings, sampler, lost, args.min_replicas),
            args.step_timeout,
        )
        t_back = timeline.mark("replicas back to min")
        time.sleep(5)  # and a little traffic on the new replica
    placement = llm_nodes(settings)
    return {
        "node_dead_after_s": round(t_dead - t_kill, 1),
        "recovered_after_s": round(t_back - t_kill, 1),
        "clients": args.clients,
        **clients.summary(since=killed_at),
        "replica_retries": retries_counted(url, auth) - retries_before,
        "llm_replicas_per_node": placement,
        "lost_node_id": lost,
        "replacement_has_llm_replica": any(node not in (head, lost) for node in placement),
    }


def locust_config(work: Path, max_tokens: int) -> Path:
    config = yaml.safe_load((loadtest.LOADTESTS / "config.yaml").read_text())
    config["users"]["streamed_chat"]["max_tokens"] = max_tokens
    config["wait_time_s"] = [1.0, 2.0]
    path = work / "locust-multinode.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def step_scale(
    settings: RaychatSettings, timeline: Timeline, sampler: Sampler, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from cluster.bench.ingress import read_stats

    prefix = work / "locust-multinode"
    argv = loadtest.locust_command(
        loadtest.target_url(settings, "nginx"),
        prefix,
        users=args.users,
        spawn_rate=args.users,
        duration=f"{int(args.step_timeout) + 60}s",
        user_classes=["StreamedChatUser"],
    )
    env = loadtest.locust_env(settings, locust_config(work, args.max_tokens))
    with (work / "locust-multinode.log").open("w") as out:
        locust = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        t_load = timeline.mark("load started")
        wait_for(
            "the autoscaler asks for more replicas",
            lambda: sum(sampler.latest.values()) > args.min_replicas,
            args.step_timeout,
        )
        t_decided = timeline.mark("scale-up decided")
        wait_for("max replicas run", lambda: sampler.running() >= args.max_replicas, args.step_timeout)
        t_up = timeline.mark("max replicas running")
        time.sleep(args.hold_s)  # the new replica takes its share of the load
        placement = llm_nodes(settings)
    finally:
        locust.send_signal(signal.SIGTERM)
        try:
            locust.wait(timeout=60)
        except subprocess.TimeoutExpired:
            locust.kill()
    t_stop = timeline.mark("load stopped")
    wait_for("replicas are back to min", lambda: sampler.settled(args.min_replicas), args.step_timeout)
    t_down = timeline.mark("replicas back to min after load")
    stats = read_stats(prefix) if (work / "locust-multinode_stats.csv").exists() else {"names": {}}
    aggregated = stats["names"].get("Aggregated", {})
    return {
        "users": args.users,
        "scale_up_decided_after_s": round(t_decided - t_load, 1),
        "scale_up_s": round(t_up - t_load, 1),
        "scale_down_s": round(t_down - t_stop, 1),
        "llm_replicas_per_node_at_max": placement,
        "locust_requests": aggregated.get("requests", 0),
        "locust_failures": aggregated.get("failures", 0),
        "backpressure_503": stats.get("backpressure_503", 0),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raychat bench multinode", description=__doc__)
    parser.add_argument("--min-replicas", type=int, default=2)
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--target-ongoing", type=float, default=1)
    # Load that leaves the cores some idle time: on one host a replica or node that starts while the
    # engines run flat out gets almost no CPU (every node shares the same 2 cores; servers do not).
    parser.add_argument("--clients", type=int, default=2, help="chat clients during the node loss")
    parser.add_argument("--pause-s", type=float, default=1.0, help="each client's pause between requests")
    parser.add_argument("--users", type=int, default=8, help="Locust users for the scale-up")
    parser.add_argument("--max-tokens", type=int, default=64, help="per streamed answer under load")
    parser.add_argument("--hold-s", type=float, default=10, help="load kept on after max replicas run")
    parser.add_argument("--step-timeout", type=float, default=420)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    base = settings or load_settings()
    if processes.is_running(base.run_dir, local.RAY_HEAD) or base.ray.address:
        log("needs the host to itself: run `raychat down` first (and leave ray.address unset)")
        return 2
    settings = scenario_settings(base, args)
    work = settings.data_dir / "bench" / "multinode"
    work.mkdir(parents=True, exist_ok=True)
    timeline = Timeline()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "min_replicas": args.min_replicas,
        "max_replicas": args.max_replicas,
        "target_ongoing": args.target_ongoing,
    }
    code = 0
    sampler: Sampler | None = None
    try:
        results["start"] = step_start(settings, timeline)
        sampler = Sampler(settings, timeline)
        sampler.start()
        results["node_loss"] = step_node_loss(settings, timeline, sampler, results["start"]["url"], args)
        results["scale"] = step_scale(settings, timeline, sampler, work, args)
    except (StepTimeout, processes.ProcessError) as exc:
        log(f"step failed: {exc}")
        results["failed_step"] = str(exc)
        code = 1
    finally:
        if sampler is not None:
            sampler.stopped.set()
        results["events_s"] = timeline.events
        results["samples"] = timeline.samples
        local.down(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multinode.json").write_text(json.dumps(results, indent=2))
    if "node_loss" in results:
        print(render(args.out, results, timeline))
    print(json.dumps({k: v for k, v in results.items() if k != "samples"}))
    return code
