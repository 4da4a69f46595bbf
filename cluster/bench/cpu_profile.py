"""Where the CPU goes while a benchmark level runs: every process on the machine, grouped by its role on the
serving path (Nginx, Serve proxy, gateway, LLM replica, engine, Ray's own processes, the load client).

On a machine where the engine is CPU-bound, every core-second another process takes is a core-second the
engine does not get, so the share each role takes, and its CPU per generated token, say where the serving
path loses throughput. Sampling is two snapshots of the kernel's per-process CPU times (before and after the
level), so it costs nothing while the load runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

# Checked in order; the first role whose test matches a process's name and command line wins.
ROLES: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("engine worker", lambda name, cmd: "VLLM::Worker" in cmd or name.startswith("VLLM::Worker")),
    ("engine core", lambda name, cmd: "VLLM::EngineCore" in cmd or name.startswith("VLLM::EngineCor")),
    ("plain vLLM server", lambda name, cmd: "vllm.entrypoints.openai.api_server" in cmd),
    ("LLM replica", lambda name, cmd: "ServeReplica" in cmd and ":LLM" in cmd),
    ("gateway", lambda name, cmd: "ServeReplica" in cmd and ":Gateway" in cmd),
    ("Serve proxy", lambda name, cmd: "ray::ProxyActor" in cmd),
    ("HAProxy", lambda name, cmd: name == "haproxy"),
    ("Nginx", lambda name, cmd: name == "nginx"),
    ("Traefik", lambda name, cmd: name == "traefik"),
    ("Redis", lambda name, cmd: "valkey" in name or "redis-server" in name),
    ("Serve controller", lambda name, cmd: "ServeController" in cmd),
    (
        "other Serve replicas",
        lambda name, cmd: "ServeReplica" in cmd or "KnowledgeSync" in cmd,
    ),
    (
        "Ray system",
        lambda name, cmd: (
            name in {"raylet", "gcs_server"}
            or "ray/_private" in cmd
            or "ray/dashboard" in cmd
            or "DashboardAgent" in cmd
            or cmd.startswith("ray::")
        ),
    ),
)
CLIENT = "load client (this process)"
OTHER = "other processes"


def role_of(name: str, cmdline: str, pid: int, own_pid: int) -> str:
    if pid == own_pid:
        return CLIENT
    for role, matches in ROLES:
        if matches(name, cmdline):
            return role
    return OTHER


@dataclass(frozen=True)
class RoleShare:
    role: str
    processes: int
    cpu_s: float
    wall_s: float
    tokens: int

    @property
    def cores(self) -> float:
        """Average cores this role kept busy over the level."""
        return self.cpu_s / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_token(self) -> float:
        return 1000 * self.cpu_s / self.tokens if self.tokens else float("nan")

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "role": self.role,
            "processes": self.processes,
            "cpu_s": round(self.cpu_s, 2),
            "cores": round(self.cores, 3),
            "cpu_ms_per_token": round(self.cpu_ms_per_token, 3),
        }


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _identify(proc: psutil.Process) -> tuple[str, str]:
    try:
        return proc.name(), " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return "", ""


@dataclass
class CpuProfile:
    """`start()` before a level, `stop(tokens)` after it: CPU per role over that window."""

    own_pid: int = field(default_factory=os.getpid)
    _before: dict[int, float] = field(default_factory=dict)
    _start: float = 0.0

    def start(self) -> None:
        self._before.clear()
        for proc in psutil.process_iter():
            try:
                self._before[proc.pid] = _cpu_seconds(proc)
            except (psutil.Error, OSError):
                continue
        self._start = time.monotonic()

    def stop(self, tokens: int) -> list[RoleShare]:
        wall = time.monotonic() - self._start
        by_role: dict[str, list[float]] = {}
        for proc in psutil.process_iter():
            try:
                used = _cpu_seconds(proc)
            except (psutil.Error, OSError):
                continue
            # A process that started during the level counts from zero.
            used -= self._before.get(proc.pid, 0.0)
            if used <= 0:
                continue
            name, cmdline = _identify(proc)
            by_role.setdefault(role_of(name, cmdline, proc.pid, self.own_pid), []).append(used)
        shares = [RoleShare(role, len(used), sum(used), wall, tokens) for role, used in by_role.items()]
        return sorted(shares, key=lambda s: s.cpu_s, reverse=True)


def render(title: str, shares: list[RoleShare], cores: int) -> list[str]:
    """A Markdown table of one level's profile."""
    total = sum(s.cpu_s for s in shares)
    wall = shares[0].wall_s if shares else 0.0
    lines = [
        f"**{title}**: {total:.1f} CPU-s over {wall:.1f} s wall ({total / wall if wall else 0:.2f} of "
        f"{cores} cores busy)",
        "",
        "| process role | processes | CPU s | cores | share of CPU | CPU ms per token |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in shares:
        if s.cpu_s < 0.05:
            continue
        lines.append(
            f"| {s.role} | {s.processes} | {s.cpu_s:.1f} | {s.cores:.2f} | "
            f"{100 * s.cpu_s / total if total else 0:.1f}% | {s.cpu_ms_per_token:.2f} |"
        )
    return lines
