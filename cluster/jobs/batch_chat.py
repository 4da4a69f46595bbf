"""Batch chat: answer a JSONL file of OpenAI-style chat requests, on the running LLM deployment or on an
engine of the job's own (Ray Data's vLLM processor).

    python cluster/jobs/batch_chat.py --input prompts.jsonl --output answers.jsonl \\
        [--engine auto|serve|dedicated] [--knowledge-base NAME] [--config raychat.yaml] [--limit N]

`--engine auto` (the default, `batch.engine`) sends a job of fewer than `batch.dedicated_min_rows` rows to the
running deployment (`cluster/jobs/engines.py`: no engine to start, answers in seconds) and a larger one to a
dedicated engine when the cluster has room for it; the summary says which and why.

Also as `raychat batch ...`, `ray submit ray-cluster.yaml cluster/jobs/batch_chat.py -- ...` and
`ray job submit --working-dir . -- python cluster/jobs/batch_chat.py ...` (there, give --output as an
absolute path: the working dir is a temporary copy). The engine is built like the Serve app's (same model
directory, engine kwargs, environment, CPU bundle) but is an engine of its own, so it needs free CPU/GPU
next to the running replicas. Rows are checked (and for a dedicated engine templated and tokenized) in the
driver, so a bad row becomes an error line instead of failing the job; a rerun with the same --output skips
the rows already answered.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a file: `cluster` importable

import argparse
import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from cluster import local
from cluster.ingress import routing
from cluster.jobs import batch_rows, batch_stream, engines
from cluster.jobs.batch_rows import ChatRow
from cluster.model_store import ModelStoreError, resolve_model
from cluster.settings import RaychatSettings, SettingsError, load_settings

RETRIEVAL_CONCURRENCY = 8


class JobError(RuntimeError):
    """The job cannot run at all (as opposed to a row that fails)."""


class Progress:
    """`[done/total] rows, x rows/s` on stderr, at most once a second."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = self.shown = time.monotonic()

    def step(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.shown >= 1 or self.done == self.total:
            self._show()

    def _show(self) -> None:
        self.shown = time.monotonic()
        rate = self.done / max(self.shown - self.started, 1e-6)
        print(f"\r  {self.label} [{self.done}/{self.total}] rows, {rate:.2f} rows/s", end="", file=sys.stderr)
        sys.stderr.flush()

    def close(self) -> None:
        self._show()
        print(file=sys.stderr)


def connect(settings: RaychatSettings) -> None:
    """`local.connect`, except under `ray job submit` (RAY_ADDRESS set, no ray.address configured):
    then the job's own cluster, not the local default head."""
    if settings.ray.address is None and os.environ.get("RAY_ADDRESS"):
        settings = settings.model_copy(update={"ray": settings.ray.model_copy(update={"address": "auto"})})
    local.connect(settings)


def build_chat_processor(
    settings: RaychatSettings, model_path: Path, batch_size: int, *, concurrency: int = 1
) -> Any:
    """Ray Data's vLLM processor, configured as the Serve app's engine (deployments/llm.py), with the
    sequence budget of offline work (`batch.dedicated_max_num_seqs`): nobody waits on one answer."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from deployments.config import temp_dir
    from deployments.llm import engine_env, engine_kwargs

    llm = settings.llm.model_copy(update={"max_num_seqs": settings.batch.dedicated_max_num_seqs})
    for sub in ("cache/vllm", "cache/torchinductor", "cache/triton"):
        (settings.data_dir / sub).mkdir(parents=True, exist_ok=True)
    temp_dir(settings.data_dir).mkdir(parents=True, exist_ok=True)
    placement: dict[str, Any] | None = None
    if llm.accelerator == "cpu":
        # Without bundles the engine stage asks for one GPU per TP worker; this is Serve's CPU bundle.
        placement = {"bundles": [{"CPU": llm.engine_num_cpus}] * llm.tensor_parallel_size, "strategy": "PACK"}
    config = vLLMEngineProcessorConfig(
        model_source=str(model_path),
        engine_kwargs=engine_kwargs(llm),
        batch_size=batch_size,
        concurrency=concurrency,
        accelerator_type=None,
        placement_group_config=placement,
        # VLLM_CPU_KVCACHE_SPACE / VLLM_CPU_OMP_THREADS_BIND on CPU, caches inside the data dir.
        runtime_env={"env_vars": engine_env(llm, settings.data_dir)},
        # The driver templates and tokenizes (per-row errors, Serve's exact tokens); vLLM detokenizes.
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        # A row vLLM rejects comes back with __inference_error__ instead of failing the dataset.
        should_continue_on_error=True,
    )
    keep = ("custom_id", "generated_text", "num_input_tokens", "num_generated_tokens")

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:  # a closure: pickled by value for the workers
        return {key: row.get(key) for key in keep}

    light = {"num_cpus": 0.25}  # the pre/post maps are trivial; leave the CPUs to the engine
    return build_processor(
        config, postprocess=postprocess, preprocess_map_kwargs=light, postprocess_map_kwargs=light
    )


class PromptRenderer:
    """The chat template and tokenizer applied as vLLM's OpenAI server applies them to a chat request
    (generation prompt added, no extra special tokens), so batch and Serve feed the model the same tokens."""

    def __init__(self, model_path: Path, trust_remote_code: bool = False) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)

    def __call__(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


async def _retrieve(
    settings: RaychatSettings, kb_name: str, rows: list[ChatRow]
) -> tuple[list[ChatRow], dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Fill each row's prompt with its knowledge-base context through the running app, as the gateway does.
    Returns (rows with RAG messages, sources by custom_id, error records by custom_id)."""
    from cluster import kb
    from deployments.gateway.protocol import SearchRequest
    from knowledge import prompt

    api = kb._api(routing.live_app(settings), settings.knowledge)
    try:
        await api.store("get_kb", kb_name)
    except Exception as exc:
        raise JobError(f"knowledge base {kb_name!r}: {getattr(exc, 'message', exc)}") from exc
    semaphore = asyncio.Semaphore(RETRIEVAL_CONCURRENCY)
    progress = Progress("retrieval", len(rows))
    filled: list[ChatRow] = []
    sources: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, dict[str, Any]] = {}

    async def one(row: ChatRow) -> None:
        async with semaphore:
            try:
                search = SearchRequest(
                    query=row.question,
                    top_k=row.top_k or settings.knowledge.default_top_k,
                    mode=row.search_mode or "hybrid",
                )
                context, hits = await api.retrieve(kb_name, search)
                messages = prompt.rag_messages(row.messages, context, settings.knowledge.prompt_template)
            except Exception as exc:  # an APIError (bad top_k, ...) or a failed call: this row only
                errors[row.custom_id] = batch_rows.error_record(
                    row.custom_id,
                    str(getattr(exc, "message", exc)),
                    getattr(exc, "type", "server_error"),
                    getattr(exc, "code", None) or "retrieval_failed",
                )
            else:
                filled.append(dataclasses.replace(row, messages=messages))
                sources[row.custom_id] = hits
            progress.step()

    await asyncio.gather(*(one(row) for row in rows))
    progress.close()
    return filled, sources, errors


def _prompts(
    settings: RaychatSettings, model_path: Path, rows: list[ChatRow]
) -> tuple[list[tuple[ChatRow, list[int]]], dict[str, dict[str, Any]]]:
    renderer = PromptRenderer(model_path, bool(settings.llm.engine_kwargs.get("trust_remote_code", False)))
    ready: list[tuple[ChatRow, list[int]]] = []
    errors: dict[str, dict[str, Any]] = {}
    for row in rows:
        try:
            ids = renderer(row.messages)
        except Exception as exc:  # the model's template rejects this conversation (roles, order, ...)
            errors[row.custom_id] = batch_rows.error_record(
                row.custom_id, f"chat template: {exc}", "invalid_request_error", "invalid_messages"
            )
            continue
        problem = batch_rows.context_error(len(ids), row.sampling["max_tokens"], settings.llm.max_model_len)
        if problem:
            errors[row.custom_id] = batch_rows.error_record(
                row.custom_id, problem, "invalid_request_error", "context_length_exceeded"
            )
        else:
            ready.append((row, ids))
    return ready, errors


def _generate(
    settings: RaychatSettings,
    model_path: Path,
    items: list[dict[str, Any]],
    batch_size: int,
    concurrency: int,
) -> Iterator[dict[str, Any]]:
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False  # Progress prints ours
    processor = build_chat_processor(settings, model_path, batch_size, concurrency=concurrency)
    yield from processor(ray.data.from_items(items)).iter_rows()


class _Job:
    """What answering needs once the first row to answer appears: the cluster, the engine chosen for the
    job's size, and for a dedicated engine the model directory."""

    def __init__(self, args: argparse.Namespace, settings: RaychatSettings, to_answer: int) -> None:
        connect(settings)
        import ray

        # One event loop for every Serve call of the job: handles bind to the loop that used them first.
        from cluster.kb import run_on_own_loop

        self.args, self.settings, self.run_on_loop = args, settings, run_on_own_loop
        self.choice = engines.choose_llm(
            args.engine or settings.batch.engine, to_answer, settings, ray.available_resources
        )
        print(f"engine: {self.choice.engine} ({self.choice.reason})", file=sys.stderr)
        self.model_path: Path | None = None

    def answer(self, rows: list[ChatRow], emit: Callable[[dict[str, Any]], None]) -> None:
        """Every row's output line goes to `emit` as it finishes."""
        settings, kb = self.settings, self.args.knowledge_base
        sources: dict[str, list[dict[str, Any]]] | None = None
        if kb:
            rows, sources, failed = self.run_on_loop(_retrieve(settings, kb, rows))
            for record in failed.values():
                emit(record)
        if self.choice.engine == "serve":
            self.run_on_loop(engines.serve_generate(settings, rows, sources, emit))
            return
        if self.model_path is None:
            self.model_path = resolve_model(
                settings.llm.model_source,
                settings.data_dir / "models",
                expected_sha256=settings.llm.model_sha256,
                weights=settings.llm.weights,
            )
        ready, failed = _prompts(settings, self.model_path, rows)
        for record in failed.values():
            emit(record)
        if not ready:
            return
        by_id = {row.custom_id: row for row, _ in ready}
        items = [batch_rows.engine_item(row, ids) for row, ids in ready]
        batch_size = self.args.batch_size or settings.batch.dedicated_batch_size
        for out in _generate(settings, self.model_path, items, batch_size, self.args.concurrency):
            row = by_id[str(out["custom_id"])]
            emit(
                batch_rows.engine_record(
                    row,
                    out,
                    model_id=settings.llm.model_id,
                    max_model_len=settings.llm.max_model_len,
                    sources=sources.get(row.custom_id) if sources is not None else None,
                )
            )


def run(args: argparse.Namespace, settings: RaychatSettings) -> dict[str, Any]:
    """Reads the input in chunks of `batch.chunk_rows`, answers each chunk's rows that the output does
    not hold yet, and appends every output line as its row finishes (`batch_stream`)."""
    source, output = Path(args.input), Path(args.output)
    if not source.is_file():
        raise JobError(f"{source}: no such file")
    answered_before = batch_stream.answered_ids_kept(output)
    with source.open(encoding="utf-8", errors="replace") as fh:
        total = batch_stream.count_rows(fh, args.limit)
    tally = batch_stream.Tally(total)
    writer = batch_stream.OutputWriter(output)
    job: _Job | None = None

    def emit(record: dict[str, Any]) -> None:
        writer.write(record)
        tally.add(record)

    try:
        with source.open(encoding="utf-8", errors="replace") as fh:
            for chunk in batch_stream.read_chunks(
                fh,
                chunk_rows=settings.batch.chunk_rows,
                model_id=settings.llm.model_id,
                rag=bool(args.knowledge_base),
                limit=args.limit,
            ):
                todo: list[ChatRow] = []
                for row in chunk:
                    if isinstance(row, ChatRow) and row.custom_id in answered_before:
                        tally.skipped += 1
                    elif isinstance(row, ChatRow):
                        todo.append(row)
                    else:
                        emit(row.record())
                if todo:
                    job = job or _Job(args, settings, max(total - len(answered_before), len(todo)))
                    job.answer(todo, emit)
    finally:
        # Also after a crash or Ctrl-C: every line written is kept, and the next run resumes from it.
        writer.close()
        tally.show(force=True)
        print(file=sys.stderr)
    choice = job.choice if job is not None else engines.Choice("serve", "nothing to answer")
    return {**tally.summary(), "engine": choice.engine, "engine_reason": choice.reason}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batch_chat", description="batch chat over a JSONL file")
    parser.add_argument("--input", required=True, help="JSONL: {custom_id, body: {messages, ...}} per line")
    parser.add_argument("--output", required=True, help="JSONL answers; an existing file is resumed")
    parser.add_argument("--knowledge-base", help="answer with context retrieved from this knowledge base")
    parser.add_argument("--config", help="YAML settings file (default: $RAYCHAT_CONFIG or ./raychat.yaml)")
    parser.add_argument("--profile", help="settings profile: cpu, gpu, tier1, tier2, tier3")
    parser.add_argument("--limit", type=_positive, help="only the first N rows of the input")
    parser.add_argument(
        "--engine",
        choices=("auto", "serve", "dedicated"),
        help="serve: the running LLM deployment; dedicated: an engine of the job's own; auto (batch.engine)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        help="rows per batch of a dedicated engine (batch.dedicated_batch_size)",
    )
    parser.add_argument(
        "--concurrency", type=_positive, default=1, help="vLLM engine replicas (autoscaled 1..N)"
    )
    return parser


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if settings is None:
            overrides: dict[str, Any] = {"profile": args.profile} if args.profile else {}
            settings = load_settings(args.config, **overrides)
        local.export_environment(settings)  # before anything imports ray
        summary = run(args, settings)
    except (SettingsError, ModelStoreError, JobError) as exc:
        print(f"batch_chat: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
