from __future__ import annotations

from pathlib import Path

import pytest

from cluster.bench.engine import vllm_server_argv
from cluster.settings import load_settings
from deployments.llm import deployment_options, engine_env, engine_kwargs

pytestmark = pytest.mark.usefixtures("clean_settings_env")


def flags(argv: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, item in enumerate(argv):
        if item.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[item] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def test_plain_vllm_gets_the_stacks_engine_arguments(tmp_path: Path) -> None:
    llm = load_settings(data_dir=tmp_path).llm
    got = flags(vllm_server_argv(llm, tmp_path / "model", 8100))
    assert got["--dtype"] == "bfloat16" and got["--max-model-len"] == "2048" and got["--max-num-seqs"] == "64"
    assert "--enable-prefix-caching" in got and "--no-enforce-eager" in got
    assert got["--port"] == "8100" and got["--model"] == str(tmp_path / "model")


def test_gpu_profile_is_right_by_construction(tmp_path: Path) -> None:
    """What `make bench-gpu` and the gpu profile hand to vLLM and Serve, checked without a GPU."""
    s = load_settings(data_dir=tmp_path, profile="gpu")
    llm = s.llm
    kwargs = engine_kwargs(llm)
    assert llm.accelerator == "gpu" and kwargs["gpu_memory_utilization"] == 0.9
    assert "max_num_seqs" not in kwargs  # vLLM's GPU defaults
    assert kwargs["enable_prefix_caching"] is True
    # No CPU-engine variables on a GPU engine: OpenMP and the CPU KV cache are the CPU backend's.
    env = engine_env(llm, tmp_path)
    assert not {"VLLM_CPU_KVCACHE_SPACE", "OMP_WAIT_POLICY", "VLLM_CPU_OMP_THREADS_BIND"} & set(env)
    assert deployment_options(llm)["request_router_config"]["request_router_class"].endswith(
        "PrefixAffinityRouter"
    )
    got = flags(vllm_server_argv(llm, tmp_path / "model", 8100))
    assert got["--gpu-memory-utilization"] == "0.9" and got["--tensor-parallel-size"] == "1"
    # 4-bit on GPU: the export's config.json names AWQ; vLLM picks its Marlin kernel, nothing forced here.
    int4 = load_settings(data_dir=tmp_path, profile="gpu", llm={"weights": "int4"}).llm
    assert "quantization" not in engine_kwargs(int4)
