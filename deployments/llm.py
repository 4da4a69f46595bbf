"""The LLM deployment: vLLM engine replicas run by Ray Serve's LLM module, configured from settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, build_llm_deployment

from deployments.config import LLMSettings, RolloutSettings, temp_dir
from deployments.llm_router import ROUTER_PATH


def engine_kwargs(llm: LLMSettings) -> dict[str, Any]:
    """vLLM engine arguments; unset options are left to vLLM's own defaults."""
    kwargs: dict[str, Any] = {
        "dtype": llm.dtype,
        "max_model_len": llm.max_model_len,
        "enforce_eager": llm.enforce_eager,
        "tensor_parallel_size": llm.tensor_parallel_size,
    }
    if llm.max_num_seqs is not None:
        kwargs["max_num_seqs"] = llm.max_num_seqs
    if llm.max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = llm.max_num_batched_tokens
    if llm.quantization:
        kwargs["quantization"] = llm.quantization
    kwargs["enable_prefix_caching"] = llm.prefix_caching
    if llm.accelerator == "gpu":
        kwargs["gpu_memory_utilization"] = llm.gpu_memory_utilization
    kwargs.update(llm.engine_kwargs)
    return kwargs


def engine_env(llm: LLMSettings, data_dir: Path) -> dict[str, str]:
    """Environment of the engine processes: CPU engine knobs, and caches kept inside the data dir."""
    cache = data_dir / "cache"
    env = {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "TMPDIR": str(temp_dir(data_dir)),
    }
    if llm.accelerator == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(llm.cpu_kvcache_space_gib)
        env["VLLM_CPU_OMP_THREADS_BIND"] = llm.omp_threads_bind()
        if llm.cpu_omp_wait_policy != "default":
            env["OMP_WAIT_POLICY"] = llm.cpu_omp_wait_policy.upper()
        if llm.cpu_omp_spin_count is not None:
            env["GOMP_SPINCOUNT"] = str(llm.cpu_omp_spin_count)
    return env


def deployment_options(llm: LLMSettings, rollout: RolloutSettings | None = None) -> dict[str, Any]:
    autoscaling: dict[str, Any] = {
        "min_replicas": llm.min_replicas,
        "max_replicas": llm.max_replicas,
        "target_ongoing_requests": llm.target_ongoing_requests,
        "upscale_delay_s": llm.upscale_delay_s,
        "downscale_delay_s": llm.downscale_delay_s,
    }
    if llm.initial_replicas is not None:
        autoscaling["initial_replicas"] = llm.initial_replicas
    options: dict[str, Any] = {
        "autoscaling_config": autoscaling,
        "max_ongoing_requests": llm.max_ongoing_requests,
        "max_queued_requests": llm.max_queued_requests,
        "ray_actor_options": {"num_cpus": llm.replica_num_cpus},
        **(rollout or RolloutSettings()).deployment_options(),
    }
    if llm.request_router == "prefix_affinity":
        options["request_router_config"] = {
            "request_router_class": ROUTER_PATH,
            "request_router_kwargs": {
                "imbalanced_threshold": llm.router_imbalance,
                "do_eviction": True,
                "eviction_threshold_chars": llm.router_tree_max_chars,
                "eviction_target_chars": llm.router_tree_max_chars * 9 // 10,
            },
        }
    return options


def placement_group_config(llm: LLMSettings) -> dict[str, Any] | None:
    """One bundle per engine worker (tensor-parallel rank).

    On GPU, Serve LLM's default bundle (one GPU per worker) is right unless extra resources are asked
    for; on CPU each worker gets `engine_num_cpus`, plus any extra resources (e.g. a declared GPU).
    """
    extra = dict(llm.engine_bundle_resources)
    if llm.accelerator == "gpu":
        if not extra:
            return None
        bundle: dict[str, float] = {"GPU": 1, **extra}
    else:
        bundle = {"CPU": llm.engine_num_cpus, **extra}
    return {"bundles": [dict(bundle) for _ in range(llm.tensor_parallel_size)]}


def build_llm_config(
    llm: LLMSettings, model_path: Path, data_dir: Path, rollout: RolloutSettings | None = None
) -> LLMConfig:
    for sub in ("cache/vllm", "cache/torchinductor", "cache/triton"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    temp_dir(data_dir).mkdir(parents=True, exist_ok=True)
    return LLMConfig(
        model_loading_config={"model_id": llm.model_id, "model_source": str(model_path)},
        accelerator_config={"kind": llm.accelerator},
        engine_kwargs=engine_kwargs(llm),
        placement_group_config=placement_group_config(llm),
        deployment_config=deployment_options(llm, rollout),
        runtime_env={"env_vars": engine_env(llm, data_dir)},
        experimental_configs={"stream_batching_interval_ms": llm.stream_batching_interval_ms},
    )


def build_llm_app(
    llm: LLMSettings, model_path: Path, data_dir: Path, rollout: RolloutSettings | None = None
) -> Application:
    return build_llm_deployment(build_llm_config(llm, model_path, data_dir, rollout), name_prefix="LLM:")
