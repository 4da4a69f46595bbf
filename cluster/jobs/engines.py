"""Which engine answers a batch job, and the `serve` engine: the cluster's running LLM deployment.

A dedicated engine (Ray Data's vLLM processor, `batch_chat.build_chat_processor`) starts a model of its own:
a minute or more on CPU, seconds of GPU memory on GPU, so it pays off only for large jobs and only where
there is room beside the serving replicas. Everything smaller goes to the running deployment through
Serve handles, a bounded number of requests at a time (`batch.serve_max_in_flight`) so that online users
keep their latency: Serve has no request priorities, the bound is the lever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cluster.ingress import routing
from cluster.jobs import batch_rows
from cluster.jobs.batch_rows import ChatRow
from cluster.settings import RaychatSettings

Engine = Literal["serve", "dedicated"]


@dataclass(frozen=True)
class Choice:
    engine: Engine
    reason: str


def room_for_dedicated(settings: RaychatSettings, available: dict[str, float]) -> tuple[bool, str]:
    """Whether the cluster's free resources (`ray.available_resources()`) hold one more engine."""
    llm = settings.llm
    if llm.accelerator == "gpu":
        need, kind = float(llm.tensor_parallel_size), "GPU"
    else:
        need, kind = llm.engine_num_cpus * llm.tensor_parallel_size, "CPU"
    free = float(available.get(kind, 0.0))
    if free >= need:
        return True, f"{free:g} {kind} free, the engine needs {need:g}"
    return False, f"only {free:g} {kind} free, a dedicated engine needs {need:g}"


def choose(
    requested: str,
    size: int,
    threshold: tuple[str, int],
    room: Callable[[], tuple[bool, str]],
    unit: str = "rows",
) -> Choice:
    """`requested` is serve, dedicated or auto. Auto: dedicated from `threshold` (the setting's name and
    value) `unit`s when `room()` finds space for it; `room` is asked only when the size calls for it."""
    if requested == "serve":
        return Choice("serve", "asked for (--engine serve)")
    if requested == "dedicated":
        return Choice("dedicated", "asked for (--engine dedicated)")
    name, value = threshold
    if size < value:
        return Choice("serve", f"{size} {unit}, under {name} ({value}): not worth an engine's start")
    fits, why = room()
    if not fits:
        return Choice("serve", f"{size} {unit}, but {why}")
    return Choice("dedicated", f"{size} {unit} ({name}: {value}) and {why}")


def choose_llm(
    requested: str, rows: int, settings: RaychatSettings, available: Callable[[], dict[str, float]]
) -> Choice:
    """A chat job's engine: its own vLLM engine, or the running LLM deployment."""
    threshold = ("batch.dedicated_min_rows", settings.batch.dedicated_min_rows)
    return choose(requested, rows, threshold, lambda: room_for_dedicated(settings, available()))


def choose_embedder(
    requested: str, files: int, settings: RaychatSettings, available: Callable[[], dict[str, float]]
) -> Choice:
    """An ingestion job's embedder: one of its own (the Embedding deployment stays free for queries), or
    the running deployment."""
    need = settings.batch.dedicated_embedder_num_cpus

    def room() -> tuple[bool, str]:
        free = float(available().get("CPU", 0.0))
        if free >= need:
            return True, f"{free:g} CPU free, the embedder needs {need:g}"
        return False, f"only {free:g} CPU free, a dedicated embedder needs {need:g}"

    threshold = ("batch.ingest_dedicated_min_files", settings.batch.ingest_dedicated_min_files)
    return choose(requested, files, threshold, room, unit="files")


def llm_handle(settings: RaychatSettings) -> Any:
    """The live colour's LLM deployment (`LLM:<served model>`; during an upgrade, the live one's)."""
    from ray import serve

    live = routing.load(settings).live
    return serve.get_deployment_handle(f"LLM:{live.model_id}", app_name=live.app)


def _record(row: ChatRow, answer: Any, sources: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The deployment's answer (an OpenAI ChatCompletion, or vLLM's error) as an output line; an error is
    read as the gateway reads it, so a row fails with the code an online request would get."""
    from deployments.gateway.errors import from_engine_error
    from deployments.gateway.stages.generation import is_engine_error

    if is_engine_error(answer):
        error = from_engine_error(answer)
        return batch_rows.error_record(
            row.custom_id, error.message, error.type, error.code or "inference_failed"
        )
    body = answer.model_dump(mode="json", exclude_none=True)
    if sources is not None:
        body["sources"] = sources
    return {"custom_id": row.custom_id, "response": body}


async def serve_generate(
    settings: RaychatSettings,
    rows: list[ChatRow],
    sources: dict[str, list[dict[str, Any]]] | None,
    on_done: Callable[[dict[str, Any]], None],
) -> None:
    """Each row as one chat request to the running deployment, `serve_max_in_flight` at a time; `on_done`
    gets each row's output line as it finishes (a failure is that row's error line, never the job's)."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    handle = llm_handle(settings).options(stream=True).chat
    model_id = routing.load(settings).live.model_id
    gate = asyncio.Semaphore(settings.batch.serve_max_in_flight)

    async def one(row: ChatRow) -> None:
        async with gate:
            try:
                request = ChatCompletionRequest.model_validate(
                    {"model": model_id, "messages": row.messages, **row.sampling, "stream": False}
                )
                answer = await handle.remote(request).__anext__()
                record = _record(row, answer, sources.get(row.custom_id) if sources is not None else None)
            except Exception as exc:  # a replica lost, a request vLLM refuses: this row only
                record = batch_rows.error_record(
                    row.custom_id, f"{type(exc).__name__}: {exc}"[:500], "server_error", "inference_failed"
                )
        on_done(record)

    await asyncio.gather(*(one(row) for row in rows))
