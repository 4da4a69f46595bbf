"""Which engine a batch job gets: the running deployment for small jobs, a dedicated one for large jobs
that fit beside it."""

from __future__ import annotations

import pytest

from cluster.jobs import engines
from cluster.settings import RaychatSettings


def _never() -> dict[str, float]:
    raise AssertionError("a small job must not ask the cluster for its free resources")


@pytest.fixture
def settings() -> RaychatSettings:
    return RaychatSettings.model_validate({"batch": {"dedicated_min_rows": 100}})


def test_a_small_job_goes_to_the_running_deployment(settings: RaychatSettings) -> None:
    choice = engines.choose_llm("auto", 4, settings, _never)
    assert (
        choice.engine == "serve" and "4 rows" in choice.reason and "dedicated_min_rows (100)" in choice.reason
    )


def test_a_large_job_gets_its_own_engine_only_when_there_is_room(settings: RaychatSettings) -> None:
    roomy = engines.choose_llm("auto", 1000, settings, lambda: {"CPU": 3.0})
    assert roomy.engine == "dedicated" and "3 CPU free" in roomy.reason
    full = engines.choose_llm("auto", 1000, settings, lambda: {"CPU": 0.5})
    assert full.engine == "serve" and "only 0.5 CPU free" in full.reason


def test_on_gpus_room_means_free_gpus_for_the_tensor_parallel_group() -> None:
    gpu = RaychatSettings.model_validate(
        {"profile": "gpu", "llm": {"accelerator": "gpu", "tensor_parallel_size": 2}}
    )
    assert engines.room_for_dedicated(gpu, {"GPU": 2.0, "CPU": 0.0})[0]
    fits, why = engines.room_for_dedicated(gpu, {"GPU": 1.0, "CPU": 64.0})
    assert not fits and why == "only 1 GPU free, a dedicated engine needs 2"


def test_asking_for_an_engine_is_obeyed(settings: RaychatSettings) -> None:
    assert engines.choose_llm("dedicated", 1, settings, _never).engine == "dedicated"
    assert engines.choose_llm("serve", 10**6, settings, _never).engine == "serve"


def test_a_large_ingestion_gets_its_own_embedder_when_a_cpu_is_free() -> None:
    settings = RaychatSettings.model_validate({"batch": {"ingest_dedicated_min_files": 10}})
    assert engines.choose_embedder("auto", 3, settings, _never).engine == "serve"
    big = engines.choose_embedder("auto", 50, settings, lambda: {"CPU": 2.0})
    assert big.engine == "dedicated" and big.reason.startswith("50 files")
    busy = engines.choose_embedder("auto", 50, settings, lambda: {"CPU": 0.0})
    assert busy.engine == "serve" and "only 0 CPU free" in busy.reason


def test_an_engine_refusal_is_the_rows_error_with_the_gateways_code() -> None:
    from types import SimpleNamespace

    from cluster.jobs.batch_rows import ChatRow

    row = ChatRow(1, "a", [{"role": "user", "content": "hi"}], {"max_tokens": 4})
    refusal = SimpleNamespace(
        error=SimpleNamespace(code=400, message="This model's maximum context length is 8", param=None)
    )
    record = engines._record(row, refusal, None)
    assert record == {
        "custom_id": "a",
        "error": {
            "message": "This model's maximum context length is 8",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
    }
