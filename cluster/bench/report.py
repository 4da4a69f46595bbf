"""The engine benchmark's Markdown table (with ratios) and PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.bench.cpu_profile import RoleShare, render
from cluster.bench.load import LevelResult

STACK, VLLM, HF = "raychat (nginx)", "vLLM server", "HF generate"


def _ratio(a: LevelResult | None, b: LevelResult | None) -> str:
    if a is None or b is None or not b.tok_per_s:
        return "–"
    return f"{a.tok_per_s / b.tok_per_s:.2f}x"


def render_table(meta: dict[str, Any], runs: dict[str, list[LevelResult]]) -> str:
    lines = [
        "# Engine benchmark",
        "",
        f"Model {meta['model']} ({meta['dtype']}"
        f"{', 4-bit weights' if meta.get('weights') == 'int4' else ''}, "
        f"enforce_eager={meta['enforce_eager']}), "
        f"{meta['max_tokens']} output tokens per request (ignore_eos), {meta['cpus']} CPUs, {meta['date']}.",
        "Command: `make bench-engine`. Output tok/s counts generated tokens over the level's wall time. "
        f"raychat is reached through Nginx {'HTTPS' if meta.get('tls') else 'HTTP'}"
        f"{', mTLS on to Serve' if meta.get('serve_mtls') else ''}"
        f"{', direct ingress to the Gateway replicas' if meta.get('direct_ingress') else ''}, "
        "with the question cache off (`cache: false`).",
        "",
        "| engine | streams | requests | output tok/s | TTFT p50 ms | TTFT p95 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, results in runs.items():
        for r in results:
            lines.append(
                f"| {name} | {r.concurrency} | {r.requests} | {r.tok_per_s:.1f} | "
                f"{r.ttft_pct(50) * 1000:.0f} | {r.ttft_pct(95) * 1000:.0f} | {r.errors} |"
            )
    by_level = {name: {r.concurrency: r for r in results} for name, results in runs.items()}
    lines += ["", "| streams | stack / vLLM | stack / HF |", "|---:|---:|---:|"]
    for level in meta["levels"]:
        stack = by_level.get(STACK, {}).get(level)
        lines.append(
            f"| {level} | {_ratio(stack, by_level.get(VLLM, {}).get(level))} | "
            f"{_ratio(stack, by_level.get(HF, {}).get(level))} |"
        )
    return "\n".join(lines) + "\n"


def render_chart(path: Path, meta: dict[str, Any], runs: dict[str, list[LevelResult]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = meta["levels"]
    fig, (tput, ttft) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(len(runs), 1)
    for i, (name, results) in enumerate(runs.items()):
        by = {r.concurrency: r for r in results}
        xs = [j + i * width for j in range(len(levels))]
        tput.bar(xs, [by[c].tok_per_s if c in by else 0 for c in levels], width, label=name)
        ttft.plot(
            [str(c) for c in levels],
            [by[c].ttft_pct(50) * 1000 if c in by else None for c in levels],
            marker="o",
            label=name,
        )
    tput.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(levels))], [str(c) for c in levels])
    tput.set_xlabel("concurrent streams")
    tput.set_ylabel("output tokens / s")
    tput.set_title("Throughput")
    tput.legend()
    ttft.set_xlabel("concurrent streams")
    ttft.set_ylabel("TTFT p50 (ms)")
    ttft.set_yscale("log")
    ttft.set_title("Time to first token")
    ttft.legend()
    fig.suptitle(f"{meta['model']} {meta['dtype']}, {meta['max_tokens']} tokens/request, {meta['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_profiles(meta: dict[str, Any], profiles: dict[str, dict[int, list[RoleShare]]]) -> str:
    """Where the CPU went at the two highest levels, for each server: the share of the machine's CPU each
    process role took, and its CPU per generated token."""
    if not profiles:
        return ""
    lines = [
        "",
        "## Where the CPU goes",
        "",
        "Every process on the machine, grouped by its role on the path, sampled from the kernel's CPU times "
        "over each level (`cluster/bench/cpu_profile.py`). The engine is CPU-bound here, so each CPU-second "
        "another process takes is one the engine does not get.",
    ]
    top = sorted(meta["levels"])[-2:]
    for name, by_level in profiles.items():
        for level in top:
            if level in by_level:
                lines += ["", *render(f"{name}, {level} streams", by_level[level], meta["cpus"])]
    return "\n".join(lines) + "\n"


def write_report(
    out: Path,
    meta: dict[str, Any],
    runs: dict[str, list[LevelResult]],
    profiles: dict[str, dict[int, list[RoleShare]]] | None = None,
) -> str:
    table = render_table(meta, runs) + render_profiles(meta, profiles or {})
    (out / "engine.md").write_text(table)
    render_chart(out / "engine.png", meta, runs)
    return table
