"""`make bench-engine`: plain vLLM server vs the raychat stack (through nginx) vs Hugging Face `generate`.

One after another on this machine, the same prompts and `max_tokens` (with `ignore_eos`, so every request
generates exactly that many tokens), at each concurrency level. Writes engine.md, engine.json, engine.png.
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

from cluster import credentials, model_store, processes
from cluster.bench.load import PROMPTS, LevelResult, run_level
from cluster.bench.report import write_report
from cluster.bench.stack import running_stack
from cluster.settings import RaychatSettings, load_settings

VLLM_SERVER = "vllm-server"


def log(message: str) -> None:
    print(f"[bench-engine] {message}", flush=True)


def run_levels(
    name: str,
    base_url: str,
    model: str,
    args: argparse.Namespace,
    headers: dict[str, str] | None = None,
) -> list[LevelResult]:
    log(f"{name}: warm-up")
    asyncio.run(run_level(base_url, model, 2, 2, 16, headers))
    results = []
    for concurrency in args.levels:
        requests = max(args.min_requests, concurrency * args.rounds)
        result = asyncio.run(run_level(base_url, model, concurrency, requests, args.max_tokens, headers))
        log(
            f"{name}: {concurrency:>3} streams  {result.tok_per_s:7.1f} tok/s  "
            f"TTFT p50 {result.ttft_pct(50) * 1000:7.1f} ms  errors {result.errors}"
        )
        results.append(result)
    return results


def bench_plain_vllm(
    settings: RaychatSettings, model_path: Path, args: argparse.Namespace
) -> list[LevelResult]:
    from deployments.llm import engine_env

    llm = settings.llm
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
        str(args.vllm_port),
        "--dtype",
        llm.dtype,
        "--max-model-len",
        str(llm.max_model_len),
    ]
    if llm.max_num_seqs:
        argv += ["--max-num-seqs", str(llm.max_num_seqs)]
    if llm.enforce_eager:
        argv.append("--enforce-eager")
    env = {**os.environ, **engine_env(llm, settings.data_dir), "VLLM_HOST_IP": "127.0.0.1"}
    log(f"(a) starting a plain vLLM OpenAI server on 127.0.0.1:{args.vllm_port}")
    processes.spawn(
        settings.run_dir, VLLM_SERVER, argv, log_file=settings.logs_dir / "bench-vllm.log", env=env
    )
    try:
        processes.wait_http(f"http://127.0.0.1:{args.vllm_port}/v1/models", timeout=600, what="vLLM server")
        return run_levels("vLLM", f"http://127.0.0.1:{args.vllm_port}", llm.model_id, args)
    finally:
        processes.stop(settings.run_dir, VLLM_SERVER)


def bench_stack(settings: RaychatSettings, args: argparse.Namespace) -> list[LevelResult]:
    log("(b) bringing up the raychat stack (one LLM replica, nginx in front)")
    with running_stack(settings) as url:
        return run_levels("raychat", url, settings.llm.model_id, args, credentials.auth_headers(settings))


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
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="requests per stream at each level")
    parser.add_argument("--min-requests", type=int, default=4)
    parser.add_argument("--vllm-port", type=int, default=8100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--only", default="vllm,stack,hf", help="subset of vllm,stack,hf")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    args = parse_args(argv)
    settings = settings or load_settings()
    # One engine against one engine: the stack runs a single replica for the comparison.
    settings.llm.min_replicas = settings.llm.max_replicas = 1
    model_path = model_store.resolve_model(
        settings.llm.model_source, settings.data_dir / "models", expected_sha256=settings.llm.model_sha256
    )
    only = set(args.only.split(","))
    runs: dict[str, list[LevelResult]] = {}
    if "vllm" in only:
        runs["vLLM server"] = bench_plain_vllm(settings, model_path, args)
    if "stack" in only:
        runs["raychat (nginx)"] = bench_stack(settings, args)
    if "hf" in only:
        runs["HF generate"] = bench_hf_generate(settings, model_path, args)
    meta = {
        "model": settings.llm.model_id,
        "dtype": settings.llm.dtype,
        "enforce_eager": settings.llm.enforce_eager,
        "max_tokens": args.max_tokens,
        "levels": args.levels,
        "cpus": os.cpu_count(),
        "stream_batching_interval_ms": settings.llm.stream_batching_interval_ms,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(
        json.dumps({"meta": meta, "runs": {k: [r.as_dict() for r in v] for k, v in runs.items()}}, indent=2)
    )
    table = write_report(args.out, meta, runs)
    print(table)
    log(f"wrote {args.out / 'engine.md'} and {args.out / 'engine.png'}")
    return 0
