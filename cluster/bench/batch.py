"""`make bench-batch`: batch jobs against the online API, side by side in one run.

1. A small job end to end, as a user runs it: a 5-line input (four prompts, one bad row) through
   `cluster/jobs/batch_chat.py` as its own process, and through `ray job submit`; wall time from the
   command to its exit (goal: 20 s on this machine; `--engine auto` sends it to the running deployment).
2. A large job (`--rows`, 1,000 by default) with `--engine auto` (a dedicated engine when there is room),
   then the same prompts through `/v1/chat/completions` with `--concurrency` in flight: output tok/s of
   each and the ratio (goal: 1.0x). Both get the same max_tokens at temperature 0 (the online side opts out
   of the question cache).
3. Online chat and search p95 while the large job runs, against the same probe idle (`probe.LatencyProbe`).

Writes `results/batch.{md,json,png}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cluster import credentials
from cluster.bench.probe import LatencyProbe
from cluster.bench.probe import p95 as p95_of
from cluster.bench.stack import running_stack
from cluster.settings import RaychatSettings, load_settings

TOPICS = ["pumps", "valves", "audits", "loans", "sensors", "boilers", "ledgers", "turbines"]


def log(message: str) -> None:
    print(f"[bench batch] {message}", file=sys.stderr, flush=True)


def prompts(n: int, max_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "body": {
                "messages": [
                    {
                        "role": "user",
                        "content": f"Write three sentences about {TOPICS[i % len(TOPICS)]} ({i}).",
                    }
                ],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        }
        for i in range(n)
    ]


def small_job_lines(max_tokens: int) -> str:
    """Four prompts and one bad row: the issue's five-line input."""
    rows = prompts(4, max_tokens)
    bad = {"custom_id": "bad", "body": {"messages": []}}
    return "".join(json.dumps(r) + "\n" for r in [*rows, bad])


def timed(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """A command's wall time, exit code and last JSON line (the job's summary)."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - started
    summary = next((json.loads(x) for x in reversed(done.stdout.splitlines()) if x.startswith('{"rows"')), {})
    if done.returncode != 0:
        log(f"  exit {done.returncode}: {done.stderr[-1500:]}")
    return {"exit": done.returncode, "seconds": round(seconds, 1), "job_summary": summary}


def run_small(settings: RaychatSettings, work: Path, max_tokens: int) -> dict[str, Any]:
    """The 5-line job as a user starts it: the script, then `ray job submit` to the head's dashboard."""
    from cluster import planes

    source = work / "small.jsonl"
    source.write_text(small_job_lines(max_tokens))
    script = str(Path(__file__).resolve().parents[1] / "jobs" / "batch_chat.py")
    # The job's settings: this run's data dir (and its config file), wherever the job's process starts.
    env = {**os.environ, "RAYCHAT_DATA_DIR": str(settings.data_dir)}
    out = {}
    output = work / "small-script.out.jsonl"
    output.unlink(missing_ok=True)
    out["script"] = timed([sys.executable, script, "--input", str(source), "--output", str(output)], env)
    output = work / "small-submit.out.jsonl"
    output.unlink(missing_ok=True)
    dashboard = f"http://{settings.ray.host}:{settings.ray.dashboard_port}"
    submit_env = {**env, **planes.ray_env(settings)}  # the Jobs API wants Ray's token
    runtime = {"env_vars": {k: v for k, v in env.items() if k.startswith("RAYCHAT_")}}
    ray = str(Path(sys.executable).parent / "ray")
    argv = [ray, "job", "submit", "--address", dashboard, "--runtime-env-json", json.dumps(runtime), "--"]
    argv += [sys.executable, script, "--input", str(source), "--output", str(output)]
    out["ray_job_submit"] = timed(argv, submit_env)
    return out


def run_batch(settings: RaychatSettings, rows: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    from cluster.jobs import batch_chat

    source, output = work / f"prompts-{len(rows)}.jsonl", work / f"answers-{len(rows)}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output.unlink(missing_ok=True)
    started = time.perf_counter()
    import contextlib
    import io

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = batch_chat.main(["--input", str(source), "--output", str(output)], settings=settings)
    elapsed = time.perf_counter() - started
    summary = json.loads(captured.getvalue().strip().splitlines()[-1])
    tokens = 0
    answered = 0
    for line in output.read_text().splitlines():
        record = json.loads(line)
        if "response" in record:
            answered += 1
            tokens += int(record["response"]["usage"]["completion_tokens"])
    return {
        "exit": code,
        "rows": len(rows),
        "answered": answered,
        "seconds": round(elapsed, 1),
        "rows_per_s": round(answered / elapsed, 2),
        "output_tok_per_s": round(tokens / elapsed, 1),
        "tokens": tokens,
        "engine": summary.get("engine"),
        "engine_reason": summary.get("engine_reason"),
        "job_summary": summary,
    }


def run_online(
    url: str, model: str, rows: list[dict[str, Any]], concurrency: int, headers: dict[str, str]
) -> dict[str, Any]:
    async def go() -> tuple[float, int, int]:
        sem = asyncio.Semaphore(concurrency)
        tokens = answered = 0
        async with httpx.AsyncClient(headers=headers, timeout=600) as client:

            async def one(row: dict[str, Any]) -> None:
                nonlocal tokens, answered
                async with sem:
                    body = {**row["body"], "model": model, "cache": False}
                    resp = await client.post(f"{url}/v1/chat/completions", json=body)
                    if resp.status_code == 200:
                        answered += 1
                        tokens += int(resp.json()["usage"]["completion_tokens"])

            started = time.perf_counter()
            await asyncio.gather(*(one(r) for r in rows))
            return time.perf_counter() - started, tokens, answered

    elapsed, tokens, answered = asyncio.run(go())
    return {
        "rows": len(rows),
        "answered": answered,
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
        "rows_per_s": round(answered / elapsed, 2),
        "output_tok_per_s": round(tokens / elapsed, 1),
    }


def after_start(b: dict[str, Any]) -> str:
    """The job's first answer came after its engine started: the rate from then on, generation alone."""
    first = b["job_summary"].get("first_answer_s")
    if not first or b["seconds"] <= first:
        return ""
    rate = b["tokens"] / (b["seconds"] - first)
    return f" Its first answer came after {first:.0f} s (the engine's start); from then on {rate:.1f} tok/s."


def render(out: Path, results: dict[str, Any]) -> str:
    small, b, o = results["small"], results["batch"], results["online"]
    idle, during = results["probe_idle"], results["probe_during"]
    ratio = b["output_tok_per_s"] / o["output_tok_per_s"] if o["output_tok_per_s"] else 0.0

    def job(run: dict[str, Any]) -> str:
        summary = run["job_summary"]
        return (
            f"{run['seconds']} s | {summary.get('answered', '-')} answered, {summary.get('errors', '-')} "
            f"error | {summary.get('engine', '-')}"
        )

    table = "\n".join(
        [
            "# Batch benchmark",
            "",
            f"{results['date']}, {results['cpus']} CPUs. Command: `make bench-batch`.",
            "",
            "## A small job end to end (four prompts and one bad row; goal 20 s)",
            "",
            "| how | wall time | rows | engine |",
            "|---|---:|---|---|",
            f"| `python cluster/jobs/batch_chat.py` | {job(small['script'])} |",
            f"| `ray job submit ... batch_chat.py` | {job(small['ray_job_submit'])} |",
            "",
            f"## {b['rows']} prompts, max_tokens {results['max_tokens']}, temperature 0 (goal 1.0x)",
            "",
            "| path | rows answered | seconds | rows/s | output tok/s |",
            "|---|---:|---:|---:|---:|",
            f"| batch job, `--engine auto`: {b['engine']} | {b['answered']} | {b['seconds']} | "
            f"{b['rows_per_s']} | {b['output_tok_per_s']} |",
            f"| online API through nginx ({o['concurrency']} in flight) | {o['answered']} | {o['seconds']} | "
            f"{o['rows_per_s']} | {o['output_tok_per_s']} |",
            "",
            f"Batch / online output tok/s: **{ratio:.2f}x**. The job chose `{b['engine']}`: "
            f"{b['engine_reason']}.{after_start(b)}",
            "",
            "## Online latency while the large job runs",
            "",
            "| probe (one client, a chat and a search in turn) | chat p95 | search p95 | requests | failed |",
            "|---|---:|---:|---:|---:|",
            f"| idle | {idle['chat_p95_s']} s | {idle['search_p95_s']} s | "
            f"{idle['chat_requests'] + idle['search_requests']} | "
            f"{idle['chat_failed'] + idle['search_failed']} |",
            f"| during the job | {during['chat_p95_s']} s | {during['search_p95_s']} s | "
            f"{during['chat_requests'] + during['search_requests']} | "
            f"{during['chat_failed'] + during['search_failed']} |",
        ]
    )
    (out / "batch.md").write_text(table + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(
        [f"batch ({b['engine']})", "online API"],
        [b["output_tok_per_s"], o["output_tok_per_s"]],
        color=["tab:blue", "tab:orange"],
    )
    left.set_ylabel("output tokens/s, wall time")
    left.set_title(f"{b['rows']} prompts, max_tokens {results['max_tokens']}")
    right.bar(["script", "ray job submit"], [small["script"]["seconds"], small["ray_job_submit"]["seconds"]])
    right.axhline(20, color="tab:red", linestyle="--", label="goal 20 s")
    right.set_ylabel("seconds, end to end")
    right.set_title("5-line job")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "batch.png", dpi=120)
    plt.close(fig)
    return table


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raychat bench batch", description=__doc__)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--idle-s", type=float, default=30, help="the latency probe alone, first")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    work = settings.data_dir / "bench" / "batch"
    work.mkdir(parents=True, exist_ok=True)
    rows = prompts(args.rows, args.max_tokens)
    with running_stack(settings) as url:
        log("a 5-line job end to end: the script, then ray job submit")
        small = run_small(settings, work, 8)
        log(f"  {small}")
        with LatencyProbe(url, settings) as probe:
            log(f"latency probe, idle, {args.idle_s:.0f} s")
            idle = probe.idle(args.idle_s)
            log(f"batch job, {len(rows)} rows, --engine auto, with the probe")
            probe.start()
            batch = run_batch(settings, rows, work)
            during = p95_of(probe.stop())
            log(f"  {batch}")
        log(f"online API, {args.concurrency} in flight")
        online = run_online(
            url, settings.llm.model_id, rows, args.concurrency, credentials.auth_headers(settings)
        )
        log(f"  {online}")
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "max_tokens": args.max_tokens,
        "small": small,
        "batch": batch,
        "online": online,
        "probe_idle": idle,
        "probe_during": during,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch.json").write_text(json.dumps(results, indent=2))
    print(render(args.out, results))
    return 0
