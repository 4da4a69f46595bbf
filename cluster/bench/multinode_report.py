"""The multi-node benchmark's Markdown table and its PNG timeline of LLM replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Timeline(Protocol):
    events: dict[str, float]
    samples: list[tuple[float, int, int]]


def render(out: Path, results: dict[str, Any], timeline: Timeline) -> str:
    s, loss, scale = results["start"], results["node_loss"], results.get("scale", {})
    lines = [
        "# Multi-node benchmark: two Ray nodes, a node lost, autoscaling under load",
        "",
        f"{results['date']}, {results['cpus']} CPUs, one host. Command: `make bench-multinode`. LLM replicas "
        f"min {results['min_replicas']} / max {results['max_replicas']}, one declared GPU per engine "
        f"(CPU engine, fp32 + enforce_eager), target {results['target_ongoing']} ongoing requests per "
        "replica; seconds are wall time.",
        "",
        "| step | what was measured | seconds |",
        "|---|---|---:|",
        f"| start | worker joined → app running (min replicas, one per node: {s['llm_nodes']} nodes) | "
        f"{s['deploy_s']} |",
        f"| node loss | kill → Ray marks the node dead | {loss['node_dead_after_s']} |",
        f"| node loss | kill → lost replica running again on the spare node | {loss['recovered_after_s']} |",
    ]
    if scale:
        lines += [
            f"| scale up | load start → autoscaler adds a replica | {scale['scale_up_decided_after_s']} |",
            f"| scale up | load start → max replicas running | {scale['scale_up_s']} |",
            f"| scale down | load stop → back to min replicas | {scale['scale_down_s']} |",
        ]
    lines += [
        "",
        f"During the node loss {loss['clients']} clients sent {loss['requests']} chat requests "
        "through nginx: "
        f"{loss['ok']} answered, {loss['failed']} failed; the gateway re-sent {loss['replica_retries']:.0f} "
        "requests whose replica was lost before it answered.",
    ]
    if scale:
        lines.append(
            f"Under load ({scale['users']} Locust users streaming chat): "
            f"{scale['locust_requests']} requests, "
            f"{scale['locust_failures']} failures ({scale['backpressure_503']} of them 503 backpressure)."
        )
    table = "\n".join(lines) + "\n"
    (out / "multinode.md").write_text(table)
    _chart(out / "multinode.png", timeline)
    return table


def _chart(path: Path, timeline: Timeline) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    if timeline.samples:
        ts, running, other = zip(*timeline.samples, strict=True)
        ax.step(ts, running, where="post", label="LLM replicas running", color="tab:blue")
        ax.step(
            ts,
            [r + o for r, o in zip(running, other, strict=True)],
            where="post",
            label="running + starting/pending",
            color="tab:orange",
            linestyle="--",
        )
    top = max((r + o for _, r, o in timeline.samples), default=3) + 1
    for i, (name, t) in enumerate(timeline.events.items()):
        ax.axvline(t, color="grey", linewidth=0.7)
        ax.text(t, top - 0.25 - 0.4 * (i % 4), f" {name}", fontsize=7, va="top")
    ax.set_ylim(0, top)
    ax.set_xlabel("seconds")
    ax.set_ylabel("replicas")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
