"""`make bench-quant`: the model's 4-bit export (`llm.weights: int4`) against its bf16 weights, one plain vLLM
server after the other on the same engine settings: weights on disk, the engine processes' resident memory,
output tok/s and TTFT at each level. Writes results/quant.{md,json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from cluster import model_store
from cluster.bench.engine import plain_vllm_server
from cluster.bench.load import LevelResult, run_level
from cluster.settings import RaychatSettings, load_settings

WEIGHTS = ("full", "int4")


def log(message: str) -> None:
    print(f"[bench quant] {message}", file=sys.stderr, flush=True)


def weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def engine_rss(server_pid: int) -> int:
    """Resident memory of the server and every process under it (API server, engine core, worker)."""
    try:
        root = psutil.Process(server_pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0


def run_one(
    settings: RaychatSettings, weights: str, model_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    llm = settings.llm.model_copy(update={"weights": weights})
    log(f"{weights}: starting vLLM on {model_dir.name}")
    log_name = f"bench-quant-{weights}.log"
    with plain_vllm_server(settings, llm, model_dir, args.vllm_port, log_name) as (base, pid):
        asyncio.run(run_level(base, llm.model_id, 2, 2, 16))
        levels: list[LevelResult] = []
        for streams in args.levels:
            level = asyncio.run(run_level(base, llm.model_id, streams, streams * 2, args.max_tokens))
            log(f"{weights}: {streams} streams {level.tok_per_s:.1f} tok/s")
            levels.append(level)
        rss = engine_rss(pid)
    return {
        "weights_mib": round(weights_bytes(model_dir) / 2**20, 1),
        "engine_rss_mib": round(rss / 2**20, 1),
        "levels": [level.as_dict() for level in levels],
    }


def render(meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# 4-bit weights against bf16",
        "",
        f"{meta['date']}, {meta['cpus']} CPUs, {meta['model']} ({meta['dtype']} activations), plain vLLM "
        f"OpenAI server, {meta['max_tokens']} output tokens per request. Command: `make bench-quant`.",
        "Engine RSS: the server and all its processes after the last level (weights, KV cache "
        f"{meta['kv_gib']} GiB, Python and torch).",
        "",
        "| weights | on disk MiB | engine RSS MiB | streams | output tok/s | TTFT p50 ms | TTFT p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for weights, r in results.items():
        for level in r["levels"]:
            lines.append(
                f"| {weights} | {r['weights_mib']} | {r['engine_rss_mib']} | {level['concurrency']} | "
                f"{level['tok_per_s']} | {level['ttft_p50_ms']} | {level['ttft_p95_ms']} |"
            )
    if len(results) == 2:
        full, int4 = results["full"], results["int4"]
        lines += ["", "| streams | int4 / full tok/s |", "|---:|---:|"]
        for a, b in zip(full["levels"], int4["levels"], strict=True):
            lines.append(f"| {a['concurrency']} | {b['tok_per_s'] / a['tok_per_s']:.2f}x |")
        lines += [
            "",
            f"Weights on disk: {int4['weights_mib'] / full['weights_mib']:.2f}x of bf16; engine RSS "
            f"{int4['engine_rss_mib'] / full['engine_rss_mib']:.2f}x.",
        ]
    return "\n".join(lines) + "\n"


def chart(path: Path, results: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (tput, mem) = plt.subplots(1, 2, figsize=(10, 3.8))
    for weights, r in results.items():
        tput.plot(
            [str(x["concurrency"]) for x in r["levels"]],
            [x["tok_per_s"] for x in r["levels"]],
            marker="o",
            label=weights,
        )
    tput.set_xlabel("concurrent streams")
    tput.set_ylabel("output tokens / s")
    tput.legend()
    names = list(results)
    mem.bar(names, [results[n]["weights_mib"] for n in names], label="weights on disk")
    mem.set_ylabel("MiB")
    mem.set_title("weights on disk")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raychat bench quant", description=__doc__)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--vllm-port", type=int, default=8100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    args = parse_args(argv)
    settings = settings or load_settings()
    models = settings.data_dir / "models"
    full_dir = model_store.resolve_model(
        settings.llm.model_source, models, expected_sha256=settings.llm.model_sha256
    )
    results: dict[str, dict[str, Any]] = {}
    for weights in WEIGHTS:
        model_dir = model_store.resolve_weights(full_dir, weights, models)
        results[weights] = run_one(settings, weights, model_dir, args)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "model": settings.llm.model_id,
        "dtype": settings.llm.dtype,
        "max_tokens": args.max_tokens,
        "kv_gib": settings.llm.cpu_kvcache_space_gib,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quant.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = render(meta, results)
    (args.out / "quant.md").write_text(table)
    chart(args.out / "quant.png", results)
    print(table)
    return 0
