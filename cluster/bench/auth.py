"""What authentication and quotas cost per request: cached answers through nginx with auth on and off.

`make bench-auth` (or `raychat bench auth`) brings the stack up with `auth.enabled: false`, warms the
question cache with `--questions` deterministic questions and times `--repeats` cached asks of each,
one at a time; then brings it up again as configured (auth on: the service key, its quota counted in
Redis) and times the same asks; `--cycles` times over (off, on, off, on, ...), so that drift of the
host between phases shows as a spread rather than as a cost. The stack is always left with auth on.
It also times the two steps in-process against the same Redis (key verification from the replica's
cache, the quota script) to show where the added time goes. Writes `results/auth.{md,json,png}`.
Goal: at most 0.5 ms added at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from cluster import credentials, local, processes, redis_server
from cluster.bench.cache import pct
from cluster.settings import RaychatSettings, load_settings


def log(message: str) -> None:
    print(f"[bench auth] {message}", file=sys.stderr, flush=True)


def with_auth(settings: RaychatSettings, enabled: bool) -> RaychatSettings:
    return settings.model_copy(update={"auth": settings.auth.model_copy(update={"enabled": enabled})})


def cached_latencies(
    url: str, model: str, headers: dict[str, str], questions: int, repeats: int
) -> list[float]:
    tag = uuid.uuid4().hex[:8]
    bodies = [
        {
            "model": model,
            "messages": [{"role": "user", "content": f"Question {i} ({tag}): name one use of Ray."}],
            "max_tokens": 16,
            "temperature": 0,
        }
        for i in range(questions)
    ]
    samples: list[float] = []
    with httpx.Client(headers=headers, timeout=120) as client:
        for body in bodies:  # the first ask of each is generated and cached
            client.post(f"{url}/v1/chat/completions", json=body).raise_for_status()
        for round_ in range(repeats):
            for body in bodies:
                began = time.perf_counter()
                resp = client.post(f"{url}/v1/chat/completions", json=body)
                elapsed = time.perf_counter() - began
                resp.raise_for_status()
                if resp.headers.get("x-cache") == "hit":
                    samples.append(elapsed * 1000)
            log(f"  round {round_ + 1}/{repeats}: {len(samples)} cached answers timed")
    return samples


def in_process_costs(settings: RaychatSettings, calls: int) -> dict[str, float]:
    """Microseconds per key verification (replica cache hit) and per quota script, on the live Redis."""
    from deployments.gateway.auth.authenticator import Authenticator
    from deployments.gateway.auth.keys import KeyStore
    from deployments.gateway.auth.quotas import Quotas
    from deployments.gateway.auth.secrets import read_pepper
    from deployments.gateway.redis_state import RedisState

    key = credentials.service_key(settings)
    assert key is not None

    async def measure() -> dict[str, float]:
        redis = RedisState(redis_server.client_settings(settings))
        auth = Authenticator(settings.auth, KeyStore(redis, read_pepper(settings.secrets_dir)))
        quotas = Quotas(redis)
        identity = await auth.identify(key)
        began = time.perf_counter()
        for _ in range(calls):
            await auth.identify(key)
        verify = (time.perf_counter() - began) / calls
        began = time.perf_counter()
        for _ in range(calls):
            await quotas.admit(identity)
        admit = (time.perf_counter() - began) / calls
        await redis.client.aclose()
        return {"verify_us": verify * 1e6, "quota_us": admit * 1e6}

    return asyncio.run(measure())


def render(out: Path, results: dict[str, Any]) -> str:
    off, on = results["off_ms"], results["on_ms"]
    added50, added95 = on["p50"] - off["p50"], on["p95"] - off["p95"]
    parts = results["in_process"]
    table = "\n".join(
        [
            "# Authentication and quota cost",
            "",
            f"{results['date']}, {results['cpus']} CPUs, through nginx at {results['url']}. "
            f"{results['questions']} questions at temperature 0, each answered once and then asked "
            f"{results['repeats']} more times from the question cache, one request at a time; first with "
            "`auth.enabled: false`, then with auth on (the service key, quota counted in Redis).",
            "Command: `make bench-auth`.",
            "",
            "| auth | cached answers | p50 ms | p95 ms |",
            "|---|---:|---:|---:|",
            f"| off | {off['n']} | {off['p50']:.2f} | {off['p95']:.2f} |",
            f"| on (key + quota) | {on['n']} | {on['p50']:.2f} | {on['p95']:.2f} |",
            f"| added | | {added50:+.2f} ({on['p50'] / off['p50']:.3f}x) | {added95:+.2f} |",
            "",
            "Each phase on its own, in the order run (every phase follows a redeploy):",
            "",
            "| phase | auth | p50 ms | p95 ms |",
            "|---:|---|---:|---:|",
            *(
                f"| {i + 1} | {p['auth']} | {p['p50']:.2f} | {p['p95']:.2f} |"
                for i, p in enumerate(results["phases"])
            ),
            "",
            f"Goal: at most 0.5 ms added at p50: {'met' if added50 <= 0.5 else 'missed'}.",
            "",
            "Where it goes, timed in-process against the same Redis: verifying a key from the replica's "
            f"cache (HMAC of the secret, constant-time compare) {parts['verify_us']:.1f} us; the quota "
            f"script (one EVALSHA: requests, tokens and the daily budget checked and counted) "
            f"{parts['quota_us']:.1f} us. Tokens are charged after the answer, off the response path.",
        ]
    )
    (out / "auth.md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.boxplot([results["samples_ms"]["off"], results["samples_ms"]["on"]], showfliers=False)
    ax.set_xticks([1, 2], ["auth off", "auth on (key + quota)"])
    ax.set_ylabel("cached answer through nginx, ms")
    ax.set_title(f"Auth + quota: {added50:+.2f} ms at p50 ({off['p50']:.2f} -> {on['p50']:.2f})")
    fig.tight_layout()
    fig.savefig(out / "auth.png", dpi=120)
    plt.close(fig)
    return table


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raychat bench auth", description=__doc__)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--cycles", type=int, default=2, help="off/on pairs, alternating")
    parser.add_argument("--calls", type=int, default=2000, help="in-process timing calls")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    if not settings.auth.enabled:
        raise SystemExit("raychat bench auth: compares auth off with on; run it with auth.enabled: true")
    was_running = processes.is_running(settings.run_dir, local.RAY_HEAD)
    samples: dict[str, list[float]] = {"off": [], "on": []}
    phases: list[dict[str, Any]] = []
    try:
        for cycle in range(args.cycles):
            for name, enabled in (("off", False), ("on", True)):  # ends with auth on, as the site runs
                phase = with_auth(settings, enabled)
                log(f"cycle {cycle + 1}/{args.cycles}: bringing the stack up with auth {name}")
                url = local.up(phase)
                headers = credentials.auth_headers(phase)
                got = cached_latencies(url, settings.llm.model_id, headers, args.questions, args.repeats)
                samples[name] += got
                phases.append({"auth": name, "p50": pct(got, 50), "p95": pct(got, 95)})
        costs = in_process_costs(settings, args.calls)
    except BaseException:
        local.up(settings)  # never leave a stack with authentication off
        raise
    finally:
        if not was_running:
            local.down(settings)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "url": settings.public_url(),
        "questions": args.questions,
        "repeats": args.repeats,
        "in_process": costs,
        "phases": phases,
        "samples_ms": samples,
    }
    for name, values in samples.items():
        results[f"{name}_ms"] = {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "auth.json").write_text(json.dumps(results, indent=2))
    print(render(args.out, results))
    return 0
