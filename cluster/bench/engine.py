"""`make bench-engine`: plain vLLM server vs the raychat stack (through nginx) vs Hugging Face `generate`.

One after another on this machine, the same prompts and `max_tokens` (with `ignore_eos`, so every request
generates exactly that many tokens), at each concurrency level. Writes engine.md, engine.json, engine.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import credentials, model_store, processes
from cluster.bench.cpu_profile import CpuProfile, RoleShare
from cluster.bench.load import PROMPTS, LevelResult, run_level
from cluster.bench.report import HF, STACK, VLLM, write_report
from cluster.bench.stack import nginx_https, running_stack
from cluster.settings import RaychatSettings, load_settings
from deployments.config import LLMSettings
from deployments.llm import engine_env, engine_kwargs

VLLM_SERVER = "vllm-server"


def log(message: str) -> None:
    print(f"[bench-engine] {message}", flush=True)


@dataclass
class Target:
    """One server under test: where it listens, what it needs to be called, and the fields raychat wants
    (`cache: false`: the question cache would answer repeated benchmark prompts without the engine)."""

    name: str
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    verify: ssl.SSLContext | bool = True
    extra: dict[str, object] = field(default_factory=dict)


def run_levels(
    target: Target, model: str, args: argparse.Namespace, profiles: dict[str, dict[int, list[RoleShare]]]
) -> list[LevelResult]:
    log(f"{target.name}: warm-up")
    asyncio.run(run_level(target.base_url, model, 2, 2, 16, target.headers, target.verify, target.extra))
    results = []
    for concurrency in args.levels:
        requests = max(args.min_requests, concurrency * args.rounds)
        profile = CpuProfile()
        profile.start()
        result = asyncio.run(
            run_level(
                target.base_url,
                model,
                concurrency,
                requests,
                args.max_tokens,
                target.headers,
                target.verify,
                target.extra,
            )
        )
        profiles.setdefault(target.name, {})[concurrency] = profile.stop(result.output_tokens)
        log(
            f"{target.name}: {concurrency:>3} streams  {result.tok_per_s:7.1f} tok/s  "
            f"TTFT p50 {result.ttft_pct(50) * 1000:7.1f} ms  p95 {result.ttft_pct(95) * 1000:7.1f} ms  "
            f"errors {result.errors}"
        )
        results.append(result)
    return results


def vllm_server_argv(llm: LLMSettings, model_path: Path, port: int) -> list[str]:
    """The plain server gets exactly the engine arguments the stack's replicas get (`engine_kwargs`), as
    its command-line flags: one engine against one engine, on CPU and on GPU alike."""
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--served-model-name",
        llm.model_id,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    for key, value in engine_kwargs(llm).items():
        flag = key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        elif isinstance(value, dict | list):
            argv += [f"--{flag}", json.dumps(value)]
        elif value is not None:
            argv += [f"--{flag}", str(value)]
    return argv


@contextmanager
def plain_vllm_server(
    settings: RaychatSettings, llm: LLMSettings, model_path: Path, port: int, log_name: str
) -> Iterator[tuple[str, int]]:
    """A plain vLLM OpenAI server with the stack's engine arguments and environment, on loopback; yields
    its URL and pid, and stops it after."""
    env = {**os.environ, **engine_env(llm, settings.data_dir), "VLLM_HOST_IP": "127.0.0.1"}
    argv = vllm_server_argv(llm, model_path, port)
    log_file = settings.logs_dir / log_name
    pid = processes.spawn(settings.run_dir, VLLM_SERVER, argv, log_file=log_file, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_http(f"{base}/v1/models", timeout=600, what="vLLM server")
        yield base, pid
    finally:
        processes.stop(settings.run_dir, VLLM_SERVER)


def bench_plain_vllm(
    settings: RaychatSettings,
    model_path: Path,
    args: argparse.Namespace,
    profiles: dict[str, dict[int, list[RoleShare]]],
) -> list[LevelResult]:
    log(f"(a) starting a plain vLLM OpenAI server on 127.0.0.1:{args.vllm_port}")
    with plain_vllm_server(settings, settings.llm, model_path, args.vllm_port, "bench-vllm.log") as (base, _):
        return run_levels(Target(VLLM, base), settings.llm.model_id, args, profiles)


def bench_stack(
    settings: RaychatSettings, args: argparse.Namespace, profiles: dict[str, dict[int, list[RoleShare]]]
) -> list[LevelResult]:
    log("(b) bringing up the raychat stack (one LLM replica, Nginx in front)")
    with running_stack(settings) as url:
        url, verify = nginx_https(settings, url)
        log(f"raychat: {url}")
        target = Target(STACK, url, credentials.auth_headers(settings), verify, {"cache": False})
        return run_levels(target, settings.llm.model_id, args, profiles)


def bench_hf_generate(
    settings: RaychatSettings, model_path: Path, args: argparse.Namespace
) -> list[LevelResult]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

    log("(c) Hugging Face transformers generate, batched")
    torch.set_num_threads(os.cpu_count() or 1)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(
        settings.llm.dtype, torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype).eval()

    class FirstToken(LogitsProcessor):
        """Called once per step; its first call comes right after the prefill: time to first token."""

        def __init__(self) -> None:
            self.first: float | None = None

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if self.first is None:
                self.first = time.perf_counter()
            return scores

    def generate(prompts: list[str], max_tokens: int) -> tuple[float, int]:
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        marker = FirstToken()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([marker]),
                pad_token_id=tokenizer.pad_token_id,
            )
        generated = int(out.shape[0] * (out.shape[1] - batch["input_ids"].shape[1]))
        return (marker.first or time.perf_counter()) - start, generated

    generate(PROMPTS[:2], 8)  # warm-up
    results = []
    for concurrency in args.levels:
        requests = max(args.min_requests, concurrency * args.rounds)
        level = LevelResult(concurrency=concurrency, requests=requests, output_tokens=0, wall_s=0.0)
        start = time.perf_counter()
        for offset in range(0, requests, concurrency):
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(offset, min(offset + concurrency, requests))]
            ttft, tokens = generate(prompts, args.max_tokens)
            level.ttft_s.extend([ttft] * len(prompts))  # a batch's requests all wait for its prefill
            level.output_tokens += tokens
        level.wall_s = time.perf_counter() - start
        p50_ms = level.ttft_pct(50) * 1000
        log(f"HF: {concurrency:>3} streams  {level.tok_per_s:7.1f} tok/s  TTFT p50 {p50_ms:7.1f} ms")
        results.append(level)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raychat bench engine", description=__doc__)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="requests per stream at each level")
    parser.add_argument("--min-requests", type=int, default=4)
    parser.add_argument("--vllm-port", type=int, default=8100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--only", default="vllm,stack", help="subset of vllm,stack,hf (hf: transformers' generate, batched)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    args = parse_args(argv)
    settings = settings or load_settings()
    # One engine against one engine: the stack runs a single replica for the comparison.
    settings.llm.min_replicas = settings.llm.max_replicas = 1
    full_path = model_store.resolve_model(
        settings.llm.model_source, settings.data_dir / "models", expected_sha256=settings.llm.model_sha256
    )
    # Plain vLLM serves what the stack serves (the 4-bit export with `llm.weights: int4`); transformers'
    # generate cannot load that export, so it always gets the full weights.
    model_path = model_store.resolve_weights(full_path, settings.llm.weights, settings.data_dir / "models")
    only = set(args.only.split(","))
    runs: dict[str, list[LevelResult]] = {}
    profiles: dict[str, dict[int, list[RoleShare]]] = {}
    if "vllm" in only:
        runs[VLLM] = bench_plain_vllm(settings, model_path, args, profiles)
    if "stack" in only:
        runs[STACK] = bench_stack(settings, args, profiles)
    if "hf" in only:
        runs[HF] = bench_hf_generate(settings, full_path, args)
    meta = {
        "model": settings.llm.model_id,
        "dtype": settings.llm.dtype,
        "weights": settings.llm.weights,
        "enforce_eager": settings.llm.enforce_eager,
        "max_tokens": args.max_tokens,
        "levels": args.levels,
        "cpus": os.cpu_count(),
        "stream_batching_interval_ms": settings.llm.stream_batching_interval_ms,
        "tls": settings.tls.enabled,
        "serve_mtls": settings.tls.enabled and settings.tls.serve_mtls,
        "direct_ingress": settings.serve.direct_ingress,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "runs": {k: [r.as_dict() for r in v] for k, v in runs.items()},
                "cpu_profiles": {
                    name: {str(level): [s.as_dict() for s in shares] for level, shares in by_level.items()}
                    for name, by_level in profiles.items()
                },
            },
            indent=2,
        )
    )
    table = write_report(args.out, meta, runs, profiles)
    print(table)
    log(f"wrote {args.out / 'engine.md'} and {args.out / 'engine.png'}")
    return 0
