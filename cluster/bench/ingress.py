"""`make bench-ingress`: the seed article's ingress table (Nginx vs Traefik) on our stack, with
direct-to-Serve as the baseline, one entry point after another in one run (about 12 minutes here).

Per entry point, three Locust runs:
- tier 1 streams: 25 users of streamed chat (max_tokens 16): the engine path end to end, TTFT included;
- tier 2 latency: 100 users of cached chat (temperature 0, so the question cache answers after the first
  ask): p50/p95 of the serving path (proxy, Serve proxy, gateway, Redis) without the engine's speed;
- tier 3 load: 500 users of cached chat: success rate and requests/s.
During each run the proxy's processes (nginx master + workers, traefik) are sampled for RSS and CPU.
Writes `results/ingress.{md,json,png}`; Locust's own CSV/HTML go to `loadtests/results/bench-*`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from cluster import loadtest, processes
from cluster.bench.stack import running_stack
from cluster.settings import RaychatSettings, load_settings

TARGETS = ("direct", "nginx", "traefik")
TTFT_NAME = "chat stream: time to first token"
# The seed article's figures (Nginx, Traefik).
SEED = {
    "p50_ms_100_users": (82.0, 76.0),
    "success_500_users_pct": (98.2, 99.1),
    "memory_mb": (210.0, 150.0),
}
RUNS: dict[str, dict[str, Any]] = {
    "tier1_stream": {"users": 25, "duration": "40s", "classes": ["StreamedChatUser"]},
    "tier2_latency": {"users": 100, "duration": "60s", "classes": ["CachedChatUser"]},
    "tier3_load": {"users": 500, "duration": "60s", "classes": ["CachedChatUser"]},
}


def log(message: str) -> None:
    print(f"[bench ingress] {message}", file=sys.stderr, flush=True)


class ProcessSampler:
    """RSS (max) and CPU (mean %) of a process tree, sampled every second in a thread."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.rss: list[float] = []
        self.cpu: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self, known: dict[int, psutil.Process]) -> list[psutil.Process]:
        # The same Process objects each time: cpu_percent() measures since that object's last call.
        assert self.pid is not None
        if self.pid not in known:
            known[self.pid] = psutil.Process(self.pid)
        root = known[self.pid]
        return [root, *(known.setdefault(p.pid, p) for p in root.children(recursive=True))]

    def _run(self) -> None:
        if self.pid is None:
            return
        known: dict[int, psutil.Process] = {}
        try:
            for p in self._tree(known):
                p.cpu_percent(None)
            while not self._stop.wait(1.0):
                procs = self._tree(known)
                self.rss.append(sum(p.memory_info().rss for p in procs) / 2**20)
                self.cpu.append(sum(p.cpu_percent(None) for p in procs))
        except psutil.Error:
            return

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, float | None]:
        if not self.rss:
            return {"rss_mb_max": None, "cpu_pct_mean": None}
        return {
            "rss_mb_max": round(max(self.rss), 1),
            "cpu_pct_mean": round(sum(self.cpu) / len(self.cpu), 1),
        }


def read_stats(prefix: Path) -> dict[str, Any]:
    """Locust's `_stats.csv` (per name and Aggregated) and the backpressure share of `_failures.csv`."""
    rows = list(csv.DictReader((prefix.parent / f"{prefix.name}_stats.csv").open()))
    by_name = {}
    for row in rows:
        by_name[row["Name"]] = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": float(row["50%"] or 0),
            "p95_ms": float(row["95%"] or 0),
            "rps": float(row["Requests/s"] or 0),
        }
    backpressure = 0
    failures_csv = prefix.parent / f"{prefix.name}_failures.csv"
    if failures_csv.exists():
        for row in csv.DictReader(failures_csv.open()):
            if "503 backpressure" in row.get("Error", ""):
                backpressure += int(row.get("Occurrences") or 0)
    return {"names": by_name, "backpressure_503": backpressure}


def run_target(settings: RaychatSettings, target: str) -> dict[str, Any]:
    pid = None if target == "direct" else processes.read_pid(settings.run_dir, target)
    out: dict[str, Any] = {}
    for run_name, spec in RUNS.items():
        log(f"{target}: {run_name} ({spec['users']} users, {spec['duration']})")
        with ProcessSampler(pid) as sampler:
            code = loadtest.run(
                settings,
                tier=None,
                ingress=target,
                users=spec["users"],
                duration=spec["duration"],
                user_classes=spec["classes"],
                name=f"bench-{target}-{run_name}",
            )
        prefix = loadtest.RESULTS / f"bench-{target}-{run_name}"
        if not (prefix.parent / f"{prefix.name}_stats.csv").exists():
            raise RuntimeError(f"Locust wrote no stats for {target} {run_name} (exit {code}); see its output")
        stats = read_stats(prefix)
        total = stats["names"].get("Aggregated", {"requests": 0, "failures": 0})
        ok = total["requests"] - total["failures"]
        out[run_name] = {
            **stats,
            "locust_exit": code,
            "success_pct": round(100 * ok / total["requests"], 2) if total["requests"] else 0.0,
            "success_excl_backpressure_pct": round(
                100 * (ok + stats["backpressure_503"]) / total["requests"], 2
            )
            if total["requests"]
            else 0.0,
            "proxy": sampler.summary(),
        }
        log(f"  {out[run_name]['success_pct']}% ok, {json.dumps(stats['names'].get('Aggregated'))}")
    return out


def render(out: Path, results: dict[str, Any]) -> str:
    t = results["targets"]

    def name_stat(target: str, run: str, name: str, key: str) -> float:
        return float(t[target][run]["names"].get(name, {}).get(key, 0.0))

    lines = [
        "# Ingress benchmark",
        "",
        f"{results['date']}, {results['cpus']} CPUs; Locust runs on the same host as the stack. "
        "Command: `make bench-ingress`.",
        "tier 1 = 25 users streamed chat (max_tokens 16); tier 2 = 100 users and tier 3 = 500 users of "
        "chat at temperature 0 (max_tokens 16), answered by the question cache after the first ask, so "
        "they measure the proxies and the serving path (Serve proxy, gateway, Redis) rather than the "
        "engine. Users wait 0.5-2 s between requests.",
        "",
        "| entry | t1 TTFT p50 ms | t1 whole answer p50 ms | t2 p50 ms | t2 p95 ms | t2 req/s | t3 success % "
        "| t3 503 backpressure | t3 req/s | t3 p95 ms | proxy RSS MB (max) | proxy CPU % (mean, t3) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in TARGETS:
        if target not in t:
            continue
        r = t[target]
        rss = [r[run]["proxy"]["rss_mb_max"] for run in RUNS if r[run]["proxy"]["rss_mb_max"]]
        cpu = r["tier3_load"]["proxy"]["cpu_pct_mean"]
        lines.append(
            f"| {target} | {name_stat(target, 'tier1_stream', TTFT_NAME, 'p50_ms'):.0f}"
            f" | {name_stat(target, 'tier1_stream', 'chat stream: whole answer', 'p50_ms'):.0f}"
            f" | {name_stat(target, 'tier2_latency', 'Aggregated', 'p50_ms'):.0f}"
            f" | {name_stat(target, 'tier2_latency', 'Aggregated', 'p95_ms'):.0f}"
            f" | {name_stat(target, 'tier2_latency', 'Aggregated', 'rps'):.1f}"
            f" | {r['tier3_load']['success_pct']:.2f} | {r['tier3_load']['backpressure_503']}"
            f" | {name_stat(target, 'tier3_load', 'Aggregated', 'rps'):.1f}"
            f" | {name_stat(target, 'tier3_load', 'Aggregated', 'p95_ms'):.0f}"
            f" | {max(rss) if rss else '–'} | {cpu if cpu is not None else '–'} |"
        )
    direct = name_stat("direct", "tier2_latency", "Aggregated", "p50_ms") if "direct" in t else 0.0
    lines += ["", "| | Nginx | Traefik |", "|---|---:|---:|"]
    for target_label, key in (("p50 at 100 users, ms", "p50"), ("success at 500 users, %", "success")):
        ours = []
        for target in ("nginx", "traefik"):
            if target not in t:
                ours.append("–")
            elif key == "p50":
                ours.append(f"{name_stat(target, 'tier2_latency', 'Aggregated', 'p50_ms'):.0f}")
            else:
                ours.append(f"{t[target]['tier3_load']['success_pct']:.2f}")
        seed = SEED["p50_ms_100_users" if key == "p50" else "success_500_users_pct"]
        lines.append(f"| raychat: {target_label} | {ours[0]} | {ours[1]} |")
        lines.append(f"| seed article: {target_label} | {seed[0]} | {seed[1]} |")
    mem = [
        max((t[x][run]["proxy"]["rss_mb_max"] or 0) for run in RUNS) if x in t else 0
        for x in ("nginx", "traefik")
    ]
    lines.append(f"| raychat: proxy memory, MB | {mem[0]:.0f} | {mem[1]:.0f} |")
    lines.append(f"| seed article: memory, MB | {SEED['memory_mb'][0]} | {SEED['memory_mb'][1]} |")
    overhead = [
        name_stat(x, "tier2_latency", "Aggregated", "p50_ms") - direct for x in ("nginx", "traefik") if x in t
    ]
    lines += [
        "",
        "p50 added over direct-to-Serve at 100 users (goal <= 2 ms): "
        + ", ".join(f"{x} {o:+.0f} ms" for x, o in zip(("nginx", "traefik"), overhead, strict=False))
        + ". Locust reports whole milliseconds, so differences under 1 ms do not show.",
    ]
    table = "\n".join(lines) + "\n"
    (out / "ingress.md").write_text(table)
    _chart(out / "ingress.png", results)
    return table


def _chart(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = results["targets"]
    names = [x for x in TARGETS if x in t]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    p50 = [t[x]["tier2_latency"]["names"]["Aggregated"]["p50_ms"] for x in names]
    p95 = [t[x]["tier2_latency"]["names"]["Aggregated"]["p95_ms"] for x in names]
    xs = range(len(names))
    axes[0].bar([i - 0.2 for i in xs], p50, 0.4, label="p50")
    axes[0].bar([i + 0.2 for i in xs], p95, 0.4, label="p95")
    axes[0].set_xticks(list(xs), names)
    axes[0].set_title("100 users (cached chat): latency, ms")
    axes[0].legend()
    axes[1].bar(names, [t[x]["tier3_load"]["success_pct"] for x in names], color="tab:green")
    axes[1].set_ylim(90, 100.5)
    axes[1].set_title("500 users: success, %")
    mem = [max((t[x][run]["proxy"]["rss_mb_max"] or 0) for run in RUNS) for x in names]
    axes[2].bar(names, mem, color="tab:purple")
    axes[2].set_title("proxy RSS (max), MB")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raychat bench ingress", description=__doc__)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    settings.ingress.kind = "both"
    results: dict[str, Any] = {"targets": {}}
    with running_stack(settings):
        for target in args.targets.split(","):
            results["targets"][target] = run_target(settings, target)
    results.update(date=time.strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count(), runs=RUNS)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingress.json").write_text(json.dumps(results, indent=2))
    print(render(args.out, results))
    return 0
