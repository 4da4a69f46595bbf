"""Question-cache benchmark: a cached answer against a generated one, through nginx, in one run.

`make bench-cache` (or `raychat bench cache`) brings the stack up if it is not running, asks `--questions`
distinct deterministic questions once each (generated: every one a cache miss), then asks each of them
`--repeats` more times (cache hits), one request at a time so that latency is not queueing. It writes
`results/cache.{md,json,png}` with p50/p95 of both and the ratio. Goal: cached p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from cluster import credentials
from cluster.bench.load import pct_of
from cluster.bench.stack import nginx_https, running_stack
from cluster.settings import RaychatSettings, load_settings


def log(message: str) -> None:
    print(f"[bench cache] {message}", file=sys.stderr, flush=True)


def ms(values: list[float], p: float) -> float:
    """The p-th percentile of latencies in seconds, as milliseconds (0 for none)."""
    return pct_of(values, p, empty=0.0) * 1000


def timed_chat(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, str]:
    began = time.perf_counter()
    resp = client.post(url, json=body)
    elapsed = time.perf_counter() - began
    resp.raise_for_status()
    return elapsed, resp.headers.get("x-cache", "?")


def run(
    base_url: str,
    model: str,
    questions: int,
    repeats: int,
    max_tokens: int,
    headers: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> dict[str, Any]:
    url = f"{base_url}/v1/chat/completions"
    tag = uuid.uuid4().hex[:8]  # fresh questions: the first ask of each is a real miss
    bodies = [
        {
            "model": model,
            "messages": [{"role": "user", "content": f"Question {i} ({tag}): name one use of Ray."}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        for i in range(questions)
    ]
    generated: list[float] = []
    cached: list[float] = []
    floor: list[float] = []
    wrong = 0
    with httpx.Client(headers=headers or {}, timeout=300, verify=verify) as client:
        # The serving path's own floor: a GET that reaches the gateway and does nothing.
        for _ in range(questions * repeats):
            began = time.perf_counter()
            client.get(f"{base_url}/healthz").raise_for_status()
            floor.append(time.perf_counter() - began)
        timed_chat(client, url, {**bodies[0], "messages": [{"role": "user", "content": "warm up"}]})
        for i, body in enumerate(bodies):
            elapsed, state = timed_chat(client, url, body)
            generated.append(elapsed)
            wrong += state != "miss"
            log(f"generated {i + 1}/{questions}: {elapsed * 1000:.0f} ms")
        for r in range(repeats):
            for body in bodies:
                elapsed, state = timed_chat(client, url, body)
                cached.append(elapsed)
                wrong += state != "hit"
            log(f"cached pass {r + 1}/{repeats}: p50 so far {ms(cached, 50):.2f} ms")
    return {
        "questions": questions,
        "repeats": repeats,
        "max_tokens": max_tokens,
        "unexpected_cache_state": wrong,
        "generated_ms": {"p50": ms(generated, 50), "p95": ms(generated, 95)},
        "cached_ms": {"p50": ms(cached, 50), "p95": ms(cached, 95)},
        "healthz_ms": {"p50": ms(floor, 50), "p95": ms(floor, 95)},
        "samples_ms": {"generated": [x * 1000 for x in generated], "cached": [x * 1000 for x in cached]},
    }


def render(out: Path, results: dict[str, Any]) -> str:
    g, c, f = results["generated_ms"], results["cached_ms"], results["healthz_ms"]
    speedup = g["p50"] / c["p50"] if c["p50"] else float("inf")
    table = "\n".join(
        [
            "# Question-cache benchmark",
            "",
            f"{results['date']}, {results['cpus']} CPUs, through nginx at {results['url']}. "
            f"{results['questions']} distinct questions at temperature 0, "
            f"max_tokens {results['max_tokens']}; "
            f"each asked once (generated) and {results['repeats']} more times (cached), one at a time.",
            "Command: `make bench-cache`.",
            "",
            "| answer | requests | p50 ms | p95 ms |",
            "|---|---:|---:|---:|",
            f"| generated (miss) | {results['questions']} | {g['p50']:.1f} | {g['p95']:.1f} |",
            f"| cached (hit) | {results['questions'] * results['repeats']} | "
            f"{c['p50']:.2f} | {c['p95']:.2f} |",
            f"| floor: GET /healthz (no body, no work) | {results['questions'] * results['repeats']} | "
            f"{f['p50']:.2f} | {f['p95']:.2f} |",
            "",
            f"Cached p50 is {c['p50'] / g['p50']:.4f}x of generated ({speedup:.0f}x faster); "
            f"goal cached p50 <= 5 ms: {'met' if c['p50'] <= 5 else 'missed'}. "
            f"Requests whose X-Cache was not the expected one: {results['unexpected_cache_state']}.",
            "",
            "The floor row is Nginx -> gateway replica (direct ingress, mTLS) and back with nothing done: "
            "what is left above it is the gateway's own work (the credential check and quota script in "
            "Redis, parsing, the cache GET, metrics, the audit line).",
        ]
    )
    (out / "cache.md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    samples = results["samples_ms"]
    ax.boxplot([samples["generated"], samples["cached"]], showfliers=False)
    ax.set_xticks([1, 2], ["generated (miss)", "cached (hit)"])
    ax.set_yscale("log")
    ax.set_ylabel("latency through nginx, ms (log)")
    ax.axhline(5, color="grey", linestyle="--", linewidth=1, label="goal: cached p50 <= 5 ms")
    ax.set_title(f"Question cache: p50 {g['p50']:.0f} ms generated vs {c['p50']:.2f} ms cached")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cache.png", dpi=120)
    plt.close(fig)
    return table


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raychat bench cache", description=__doc__)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    with running_stack(settings) as url:
        url, verify = nginx_https(settings, url)
        results = run(
            url,
            settings.llm.model_id,
            args.questions,
            args.repeats,
            args.max_tokens,
            credentials.auth_headers(settings),
            verify,
        )
    results.update(date=time.strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count(), url=url)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache.json").write_text(json.dumps(results, indent=2))
    print(render(args.out, results))
    return 0
