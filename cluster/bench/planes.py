"""What the hardened planes cost in generation: streaming chat through nginx, all planes off and all on.

`make bench-planes` (or `raychat bench planes`) restarts the stack with `tls.enabled`, `ray.token_auth`,
`ray.use_tls` and `redis.local_tls` all off (clients on nginx's plain HTTP port), then all on (clients on
nginx's HTTPS port, verifying raychat's CA), `--cycles` times over (off, on, off, on, ...). Every phase is a
full restart: `down`, then `up` from a fresh process, as Ray reads its token and TLS settings once per
process. In each phase, at each of `--levels` concurrent streams, after a short warm-up every stream sends
streaming chat requests back to back for `--duration-s` (`--max-tokens` with `ignore_eos`, temperature 0,
`cache: false` so the question cache never answers): output tok/s, TTFT p50/p95 and errors. One bf16
compiled LLM replica in both phases. A stack that was running is left up as configured; one this run
started is stopped. Writes `results/planes.{md,json,png}`.
Goal: at most 5% of the output throughput lost at 32 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import ssl
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from cluster import credentials, local, processes, redis_server
from cluster.bench.load import PROMPTS, LevelResult, chat_body
from cluster.bench.load import _one as one_stream
from cluster.bench.report import render_chart
from cluster.settings import RaychatSettings, load_settings

PHASES = (("off", False), ("on", True))  # ends with the planes on
GOAL_STREAMS, GOAL_MAX_LOSS = 32, 0.05


def log(message: str) -> None:
    print(f"[bench planes] {message}", file=sys.stderr, flush=True)


def phase_settings(settings: RaychatSettings, on: bool) -> RaychatSettings:
    """The caller's settings with every plane lock set to `on`, and one bf16 compiled LLM replica (as the
    engine bench), so that autoscaling cannot tell the phases apart."""
    engine = dict(
        dtype="bfloat16", enforce_eager=False, min_replicas=1, max_replicas=1, initial_replicas=None
    )
    return settings.model_copy(
        update={
            "llm": settings.llm.model_copy(update=engine),
            "tls": settings.tls.model_copy(update={"enabled": on, "serve_mtls": on}),
            "ray": settings.ray.model_copy(update={"token_auth": on, "use_tls": on}),
            "redis": settings.redis.model_copy(update={"local_tls": on}),
        }
    )


def switches(settings: RaychatSettings) -> dict[str, bool]:
    return {
        "tls.enabled": settings.tls.enabled,
        "tls.serve_mtls": settings.tls.serve_mtls,
        "ray.token_auth": settings.ray.token_auth,
        "ray.use_tls": settings.ray.use_tls,
        "redis.local_tls": settings.redis.local_tls,
    }


def phase_meta(settings: RaychatSettings, on: bool) -> dict[str, Any]:
    phase = phase_settings(settings, on)  # the Redis build decides whether local_tls takes effect
    return {
        "switches": switches(phase),
        "url": phase_url(phase, on),
        "redis_tls": redis_server.uses_tls(phase),
    }


def phase_url(settings: RaychatSettings, on: bool) -> str:
    ing = settings.ingress
    return f"https://{ing.host}:{ing.nginx_https_port}" if on else f"http://{ing.host}:{ing.nginx_port}"


def client_verify(settings: RaychatSettings, on: bool) -> ssl.SSLContext | bool:
    """raychat's private CA (or the system's store for a site certificate) when the clients use HTTPS."""
    if not on:
        return True
    ca = settings.tls_dir / "ca.crt" if settings.tls.site_cert is None else None
    return ssl.create_default_context(cafile=str(ca) if ca else None)


def restart(settings: RaychatSettings) -> str:
    """`down`, then `up` in a spawned process: this one keeps no Ray driver, so no token or TLS setting of
    an earlier phase is left in it."""
    local.down(settings)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(local.up, settings).result()


async def run_for(
    url: str,
    model: str,
    headers: dict[str, str],
    verify: ssl.SSLContext | bool,
    streams: int,
    duration_s: float,
    max_tokens: int,
) -> LevelResult:
    """`streams` clients, each sending requests back to back until `duration_s` has passed; a request under
    way at the deadline is finished and counted."""
    endpoint = f"{url}/v1/chat/completions"
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    result = LevelResult(concurrency=streams, requests=0, output_tokens=0, wall_s=0.0)
    began = time.perf_counter()
    deadline = began + duration_s

    async with httpx.AsyncClient(headers=headers, verify=verify, timeout=600, limits=limits) as client:

        async def client_loop(index: int) -> None:
            sent = 0
            while time.perf_counter() < deadline:
                prompt = PROMPTS[(index + sent * streams) % len(PROMPTS)]
                body = {**chat_body(model, prompt, max_tokens), "cache": False}
                sent += 1
                result.requests += 1
                try:
                    ttft, tokens = await one_stream(client, endpoint, body)
                except Exception:
                    ttft, tokens = -1.0, 0
                if ttft < 0:  # refused, broken off or no text at all
                    result.errors += 1
                    await asyncio.sleep(0.2)
                    continue
                result.ttft_s.append(ttft)
                result.output_tokens += tokens

        await asyncio.gather(*(client_loop(i) for i in range(streams)))
    result.wall_s = time.perf_counter() - began
    return result


def run_phase(name: str, phase: RaychatSettings, on: bool, args: argparse.Namespace) -> list[LevelResult]:
    url, verify, headers = phase_url(phase, on), client_verify(phase, on), credentials.auth_headers(phase)
    model, results = phase.llm.model_id, []
    for streams in args.levels:
        log(f"  planes {name}: {streams} streams, warm-up {args.warmup_s:g} s")
        asyncio.run(run_for(url, model, headers, verify, streams, args.warmup_s, args.max_tokens))
        got = asyncio.run(run_for(url, model, headers, verify, streams, args.duration_s, args.max_tokens))
        log(
            f"  planes {name}: {streams:>3} streams  {got.tok_per_s:7.1f} tok/s  TTFT p50 "
            f"{got.ttft_pct(50) * 1000:7.1f} ms  p95 {got.ttft_pct(95) * 1000:7.1f} ms  errors {got.errors}"
        )
        results.append(got)
    return results


def merge(results: list[LevelResult]) -> LevelResult:
    """One level's runs over the cycles as one: tokens over summed wall time, every TTFT sample."""
    return LevelResult(
        concurrency=results[0].concurrency,
        requests=sum(r.requests for r in results),
        output_tokens=sum(r.output_tokens for r in results),
        wall_s=sum(r.wall_s for r in results),
        ttft_s=[t for r in results for t in r.ttft_s],
        errors=sum(r.errors for r in results),
    )


def summarize(runs: list[dict[str, Any]], levels: list[int]) -> dict[str, list[LevelResult]]:
    """{"off": [one merged result per level], "on": [...]} from the runs in order."""
    summary: dict[str, list[LevelResult]] = {}
    for name, _ in PHASES:
        per_level = [
            [r for run in runs if run["phase"] == name for r in run["levels"] if r.concurrency == level]
            for level in levels
        ]
        summary[name] = [merge(found) for found in per_level if found]
    return summary


def _over(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def ratios(summary: dict[str, list[LevelResult]]) -> dict[int, dict[str, float]]:
    """On over off per level: tok/s (1.0 = nothing lost) and TTFT p50/p95 (above 1.0 = slower)."""
    off = {r.concurrency: r for r in summary.get("off", [])}
    out = {}
    for on in summary.get("on", []):
        base = off.get(on.concurrency)
        if base is not None:
            out[on.concurrency] = {
                "tok_per_s": _over(on.tok_per_s, base.tok_per_s),
                "ttft_p50": _over(on.ttft_pct(50), base.ttft_pct(50)),
                "ttft_p95": _over(on.ttft_pct(95), base.ttft_pct(95)),
            }
    return out


def goal_met(by_level: dict[int, dict[str, float]]) -> bool | None:
    """At most 5% of the throughput lost at 32 streams; None when that level was not measured."""
    ratio = by_level.get(GOAL_STREAMS, {}).get("tok_per_s", float("nan"))
    return None if math.isnan(ratio) else ratio >= 1 - GOAL_MAX_LOSS


def _settings_line(name: str, phase: dict[str, Any]) -> str:
    locks = ", ".join(f"`{key}: {str(value).lower()}`" for key, value in phase["switches"].items())
    redis = "yes" if phase["redis_tls"] else "no"
    if phase["switches"]["redis.local_tls"] and not phase["redis_tls"]:
        redis += " (this Redis build has no TLS)"
    return f"- {name}: {locks}; clients on {phase['url']}; Redis over TLS in effect: {redis}"


def render_markdown(meta: dict[str, Any], summary: dict[str, list[LevelResult]], runs: list[dict]) -> str:
    by_level, met = ratios(summary), goal_met(ratios(summary))
    lines = [
        "# Hardened planes: cost in generation",
        "",
        f"{meta['date']}, {meta['cpus']} CPUs. Model {meta['model']} (bfloat16, compiled, one replica), "
        f"{meta['max_tokens']} output tokens per request (ignore_eos, temperature 0, question cache off). "
        f"At each level every stream sends streaming chat requests back to back for {meta['duration_s']:g} s "
        f"(after a {meta['warmup_s']:g} s warm-up), through nginx; {meta['cycles']} cycle(s) of off then on, "
        "each phase a full restart. Command: `make bench-planes`.",
        "",
        *(_settings_line(name, meta["phases"][name]) for name, _ in PHASES),
        "",
        "| streams | planes | requests | output tok/s | TTFT p50 ms | TTFT p95 ms | errors "
        "| tok/s on/off | TTFT p50 on/off | TTFT p95 on/off |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in meta["levels"]:
        for name, _ in PHASES:
            r = next((r for r in summary.get(name, []) if r.concurrency == level), None)
            if r is None:
                continue
            ratio = by_level.get(level) if name == "on" else None
            cells = [f"{ratio[k]:.3f}x" for k in ("tok_per_s", "ttft_p50", "ttft_p95")] if ratio else [""] * 3
            lines.append(
                f"| {level} | {name} | {r.requests} | {r.tok_per_s:.1f} | {r.ttft_pct(50) * 1000:.0f} | "
                f"{r.ttft_pct(95) * 1000:.0f} | {r.errors} | {' | '.join(cells)} |"
            )
    if met is None:
        verdict = f"not measured ({GOAL_STREAMS} streams not among the levels)"
    else:
        lost = (1 - by_level[GOAL_STREAMS]["tok_per_s"]) * 100
        verdict = f"{'met' if met else 'missed'} ({lost:.1f}% lost)"
    goal = f"at most {GOAL_MAX_LOSS:.0%} of the output throughput lost at {GOAL_STREAMS} streams"
    lines += [
        "",
        f"Goal: {goal}: {verdict}.",
        "",
        "Each phase on its own, in the order run:",
        "",
        "| run | planes | streams | output tok/s | TTFT p50 ms | errors |",
        "|---:|---|---:|---:|---:|---:|",
        *(
            f"| {i + 1} | {run['phase']} | {r.concurrency} | {r.tok_per_s:.1f} | "
            f"{r.ttft_pct(50) * 1000:.0f} | {r.errors} |"
            for i, run in enumerate(runs)
            for r in run["levels"]
        ),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raychat bench planes", description=__doc__)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32])
    parser.add_argument("--duration-s", type=float, default=30, help="measured time per level and phase")
    parser.add_argument("--warmup-s", type=float, default=5, help="warm-up per level and phase")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--cycles", type=int, default=1, help="off/on pairs, alternating")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    args = parse_args(argv)
    settings = settings or load_settings()
    if settings.ray.address:
        raise SystemExit("raychat bench planes: restarts a local head; leave ray.address unset")
    if settings.ingress.kind not in ("nginx", "both"):
        raise SystemExit("raychat bench planes: clients go through nginx; set ingress.kind: nginx (or both)")
    was_running = processes.is_running(settings.run_dir, local.RAY_HEAD)
    current: RaychatSettings | None = settings if was_running else None
    runs: list[dict[str, Any]] = []
    try:
        for cycle in range(args.cycles):
            for name, on in PHASES:
                phase = phase_settings(settings, on)
                log(f"cycle {cycle + 1}/{args.cycles}: restarting the stack with the planes {name}")
                current = None
                restart(phase)
                current = phase
                runs.append({"phase": name, "cycle": cycle + 1, "levels": run_phase(name, phase, on, args)})
    finally:
        if not was_running:
            log("stopping the stack this run started")
            local.down(settings)
        elif current != settings:  # never left with the planes off
            log("restarting the stack as configured")
            restart(settings)
    write_results(args, settings, runs)
    return 0


def write_results(args: argparse.Namespace, settings: RaychatSettings, runs: list[dict[str, Any]]) -> None:
    summary = summarize(runs, args.levels)
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "model": settings.llm.model_id,
        "dtype": "bfloat16",
        "max_tokens": args.max_tokens,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "levels": args.levels,
        "cycles": args.cycles,
        "phases": {name: phase_meta(settings, on) for name, on in PHASES},
    }
    by_level = ratios(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "meta": meta,
        "summary": {name: [r.as_dict() for r in rs] for name, rs in summary.items()},
        "ratios_on_over_off": by_level,
        "goal_met": goal_met(by_level),
        "runs": [{**run, "levels": [r.as_dict() for r in run["levels"]]} for run in runs],
    }
    (args.out / "planes.json").write_text(json.dumps(results, indent=2))
    table = render_markdown(meta, summary, runs)
    (args.out / "planes.md").write_text(table)
    render_chart(args.out / "planes.png", meta, {f"planes {name}": rs for name, rs in summary.items()})
    print(table)
    log(f"wrote {args.out / 'planes.md'}, planes.json and planes.png")
