"""`make bench-prefix`: prefix-aware routing against Serve's default router, two LLM replicas, RAG-like chats.

A RAG chat is a long shared prefix (the knowledge context retrieved for a document) and a short question.
The workload here: `--documents` contexts of real text (the long descriptions that installed packages ship
in their METADATA, nobody here wrote them), each asked `--asks` questions, in a seeded random order,
`--streams` at a time, through Nginx with the question cache off. A replica that has seen a context keeps
its KV cache (vLLM prefix caching) and skips that prefill; Serve's default router spreads the asks of one
context over both replicas, so more of them pay the prefill. Both phases run in one run, one after the
other, on the same stack (the router is a deployment option: the LLM deployment is redeployed between
them). Writes results/prefix.{md,json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from cluster import credentials, local
from cluster.bench.load import pct_of
from cluster.bench.stack import nginx_https, running_stack
from cluster.settings import RaychatSettings, load_settings

ROUTERS = ("power_of_two", "prefix_affinity")
QUESTIONS = (
    "What is this package for?",
    "Name one feature described above.",
    "Who would use this?",
    "Summarise the context in one sentence.",
)


def log(message: str) -> None:
    print(f"[bench prefix] {message}", file=sys.stderr, flush=True)


def documents(count: int, chars: int) -> list[str]:
    """The longest package descriptions installed here, cut to `chars`: real prose, stable per venv."""
    texts: dict[str, str] = {}
    for dist in metadata.distributions():
        body = dist.metadata.get_payload() if hasattr(dist.metadata, "get_payload") else ""
        name = dist.metadata.get("Name") or ""
        if isinstance(body, str) and len(body) >= chars and name not in texts:
            texts[name] = body[:chars]
    if len(texts) < count:
        raise SystemExit(f"only {len(texts)} package descriptions of {chars}+ characters; lower --documents")
    return [texts[name] for name in sorted(texts)[:count]]


def workload(docs: list[str], asks: int, seed: int) -> list[tuple[int, str]]:
    order = [(d, QUESTIONS[a % len(QUESTIONS)]) for d in range(len(docs)) for a in range(asks)]
    random.Random(seed).shuffle(order)
    return order


def body(model: str, doc: str, question: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": f"Answer from this context only.\n\nContext:\n{doc}"},
            {"role": "user", "content": question},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "cache": False,
    }


async def run_phase(
    url: str,
    model: str,
    docs: list[str],
    order: list[tuple[int, str]],
    streams: int,
    max_tokens: int,
    headers: dict[str, str],
    verify: ssl.SSLContext | bool,
) -> dict[str, Any]:
    queue = list(reversed(order))
    ttfts: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=streams + 2, max_keepalive_connections=streams + 2)
    async with httpx.AsyncClient(headers=headers, verify=verify, timeout=600, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                doc, question = queue.pop()
                began = time.perf_counter()
                try:
                    payload = body(model, docs[doc], question, max_tokens)
                    async with client.stream("POST", f"{url}/v1/chat/completions", json=payload) as resp:
                        resp.raise_for_status()
                        first: float | None = None
                        async for piece in resp.aiter_text():  # read to the end: the stream's full cost
                            if first is None and '"content"' in piece:
                                first = time.perf_counter() - began
                        if first is not None:
                            ttfts.append(first)
                except httpx.HTTPError:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        wall = time.perf_counter() - began
    return {
        "requests": len(order),
        "errors": errors,
        "wall_s": round(wall, 2),
        "ttft_p50_ms": round(pct_of(ttfts, 50) * 1000, 1),
        "ttft_p95_ms": round(pct_of(ttfts, 95) * 1000, 1),
        "ttft_mean_ms": round(statistics.fmean(ttfts) * 1000, 1) if ttfts else float("nan"),
    }


def render(meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Prefix-aware routing benchmark",
        "",
        f"{meta['date']}, {meta['cpus']} CPUs, {meta['replicas']} LLM replicas ({meta['model']}, "
        f"{meta['dtype']}), vLLM prefix caching on. {meta['documents']} contexts of {meta['chars']} "
        f"characters (package descriptions), each asked {meta['asks']} times in a seeded random order, "
        f"{meta['streams']} streams, {meta['max_tokens']} output tokens, through Nginx, question cache off.",
        "Command: `make bench-prefix`.",
        "",
        "| router | requests | errors | TTFT p50 ms | TTFT p95 ms | TTFT mean ms | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for router, r in results.items():
        lines.append(
            f"| {router} | {r['requests']} | {r['errors']} | {r['ttft_p50_ms']} | {r['ttft_p95_ms']} | "
            f"{r['ttft_mean_ms']} | {r['wall_s']} |"
        )
    base, prefix = results.get("power_of_two"), results.get("prefix_affinity")
    if base and prefix and prefix["ttft_p50_ms"]:
        ratio = base["ttft_p50_ms"] / prefix["ttft_p50_ms"]
        verdict = "met" if prefix["ttft_p50_ms"] < base["ttft_p50_ms"] else "missed"
        lines += [
            "",
            f"TTFT p50 with prefix-aware routing is {ratio:.2f}x lower than with Serve's default router "
            f"(goal: lower; {verdict}).",
        ]
    return "\n".join(lines) + "\n"


def chart(path: Path, results: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(results)
    for i, key in enumerate(("ttft_p50_ms", "ttft_p95_ms")):
        ax.bar([j + i * 0.4 for j in range(len(names))], [results[n][key] for n in names], 0.4, label=key)
    ax.set_xticks([j + 0.2 for j in range(len(names))], names)
    ax.set_ylabel("ms")
    ax.set_title("Time to first token, RAG-like chats, 2 replicas")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raychat bench prefix", description=__doc__)
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--chars", type=int, default=3000, help="characters of context per document")
    parser.add_argument("--asks", type=int, default=3, help="questions per document")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    args = parse_args(argv)
    settings = settings or load_settings()
    settings.llm.min_replicas = settings.llm.max_replicas = 2
    docs = documents(args.documents, args.chars)
    order = workload(docs, args.asks, args.seed)
    results: dict[str, dict[str, Any]] = {}
    settings.llm.request_router = ROUTERS[0]
    log("bringing the stack up with two LLM replicas")
    with running_stack(settings) as url:
        url, verify = nginx_https(settings, url)
        headers = credentials.auth_headers(settings)
        model = settings.llm.model_id
        for router in ROUTERS:
            settings.llm.request_router = router  # type: ignore[assignment]  # one of the Literal's values
            log(f"{router}: deploying the LLM deployment with this router")
            local.up(settings)  # the router is a deployment option: this redeploys (no-op if unchanged)
            # Fresh contexts per phase: a tag in front keeps a phase from finding the other's KV cache.
            tagged = [f"[{router}] {doc}" for doc in docs]
            asyncio.run(run_phase(url, model, ["warm-up"], [(0, "hi")] * 4, 2, 4, headers, verify))
            results[router] = asyncio.run(
                run_phase(url, model, tagged, order, args.streams, args.max_tokens, headers, verify)
            )
            log(f"{router}: {results[router]}")
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "replicas": 2,
        "model": settings.llm.model_id,
        "dtype": settings.llm.dtype,
        "documents": args.documents,
        "chars": args.chars,
        "asks": args.asks,
        "streams": args.streams,
        "max_tokens": args.max_tokens,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prefix.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = render(meta, results)
    (args.out / "prefix.md").write_text(table)
    chart(args.out / "prefix.png", results)
    print(table)
    return 0
