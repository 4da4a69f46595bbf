from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from deployments.config import LLMSettings
from deployments.llm import deployment_options, engine_env, engine_kwargs


def test_autoscaling_is_explicit() -> None:
    opts = deployment_options(LLMSettings(min_replicas=2, max_replicas=4, target_ongoing_requests=8))
    auto = opts["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (2, 4, 8)
    assert opts["max_ongoing_requests"] < 1e9  # Serve LLM's default would disable scaling


def test_engine_kwargs_from_settings() -> None:
    kw = engine_kwargs(
        LLMSettings(
            dtype="float32",
            enforce_eager=True,
            max_num_seqs=None,
            quantization="fp8",
            tensor_parallel_size=2,
            engine_kwargs={"seed": 1},
        )
    )
    assert kw["dtype"] == "float32" and kw["enforce_eager"] is True and kw["quantization"] == "fp8"
    assert kw["tensor_parallel_size"] == 2 and kw["seed"] == 1
    assert "max_num_seqs" not in kw  # left to vLLM's default
    assert "gpu_memory_utilization" not in kw  # CPU engine
    assert engine_kwargs(LLMSettings(accelerator="gpu"))["gpu_memory_utilization"] == 0.9


def test_engine_env_keeps_caches_in_data_dir(tmp_path: Path) -> None:
    env = engine_env(LLMSettings(cpu_kvcache_space_gib=3, cpu_omp_threads_bind="0-1"), tmp_path)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3" and env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        assert env[key].startswith(str(tmp_path))
    short = Path("/srv/raychat")
    assert engine_env(LLMSettings(), short)["TMPDIR"] == "/srv/raychat/tmp"
    assert "VLLM_CPU_KVCACHE_SPACE" not in engine_env(LLMSettings(accelerator="gpu"), tmp_path)


def test_temp_dir_stays_short_enough_for_sockets(tmp_path: Path) -> None:
    from deployments.config import temp_dir

    assert temp_dir(Path("/srv/raychat")) == Path("/srv/raychat/tmp")
    deep = Path("/" + "/".join(["a-rather-long-folder-name"] * 4))
    short = temp_dir(deep)
    assert len(str(short)) <= 60 and short == temp_dir(deep)  # stable per data dir
    assert temp_dir(deep) != temp_dir(deep / "other")
    assert engine_env(LLMSettings(), deep)["TMPDIR"] == str(short)


def test_engine_bundles_carry_declared_resources() -> None:
    import pytest
    from pydantic import ValidationError

    from deployments.llm import placement_group_config

    cpu = placement_group_config(LLMSettings(engine_num_cpus=2, engine_bundle_resources={"GPU": 1}))
    assert cpu == {"bundles": [{"CPU": 2, "GPU": 1}]}
    tp2 = placement_group_config(LLMSettings(tensor_parallel_size=2))
    assert tp2 == {"bundles": [{"CPU": 1}, {"CPU": 1}]}
    assert tp2["bundles"][0] is not tp2["bundles"][1]  # Serve may annotate bundles in place
    assert placement_group_config(LLMSettings(accelerator="gpu")) is None  # Serve LLM's GPU default
    assert placement_group_config(LLMSettings(accelerator="gpu", engine_bundle_resources={"llm": 1})) == {
        "bundles": [{"GPU": 1, "llm": 1}]
    }
    for bad in ({"CPU": 1}, {"GPU": 0}):
        with pytest.raises(ValidationError, match="engine_bundle_resources"):
            LLMSettings(engine_bundle_resources=bad)


def test_services_pin_to_the_head_by_default() -> None:
    from deployments.config import PlacementSettings

    assert PlacementSettings().head_resources() == {"node:__internal_head__": 0.001}
    assert PlacementSettings(services_on_head=False).head_resources() == {}


def test_prefix_affinity_router_and_prefix_caching_by_default() -> None:
    llm = LLMSettings()
    assert engine_kwargs(llm)["enable_prefix_caching"] is True
    router = deployment_options(llm)["request_router_config"]
    assert router["request_router_class"] == "deployments.llm_router.PrefixAffinityRouter"
    kwargs = router["request_router_kwargs"]
    assert kwargs["imbalanced_threshold"] == llm.router_imbalance and kwargs["do_eviction"] is True
    assert kwargs["eviction_target_chars"] < kwargs["eviction_threshold_chars"] == llm.router_tree_max_chars
    # Serve's default router: no request_router_config at all.
    assert "request_router_config" not in deployment_options(LLMSettings(request_router="power_of_two"))
    assert engine_kwargs(LLMSettings(prefix_caching=False))["enable_prefix_caching"] is False


def test_the_router_class_path_imports() -> None:
    from ray.serve._private.utils import import_attr

    from deployments.llm_router import ROUTER_PATH, PrefixAffinityRouter

    assert import_attr(ROUTER_PATH) is PrefixAffinityRouter


def test_the_router_builds_on_the_policy_serve_llm_publishes() -> None:
    """Ray's public `PrefixCacheAffinityRouter` is an empty subclass of the policy we import directly
    (to keep vLLM out of every process that reads the config): if that changes, this says so."""
    from ray.serve.llm.request_router import PrefixCacheAffinityRouter as Public

    from deployments.llm_router import PrefixAffinityRouter

    policy = PrefixAffinityRouter.__mro__[1]
    assert Public.__bases__ == (policy,)
    assert [name for name, value in vars(Public).items() if callable(value)] == []


def test_prompts_without_text_go_by_serves_default_choice() -> None:
    """Ray's prefix router divides by the prompt text's length: an empty text, a token-id prompt or a call
    without a request must never reach it."""
    from types import SimpleNamespace

    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    from deployments.llm_router import PrefixAffinityRouter

    router = PrefixAffinityRouter.__new__(PrefixAffinityRouter)  # no Serve machinery needed for this
    chat = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hello there"}])
    assert router._prompt_text(SimpleNamespace(args=[chat])) == "hello there"
    ids = CompletionRequest(model="m", prompt=[1, 2, 3])
    assert router._prompt_text(SimpleNamespace(args=[ids])) is None
    assert router._prompt_text(SimpleNamespace(args=[])) is None
    assert router._prompt_text(SimpleNamespace(args=["health"])) is None
    assert router._prompt_text(None) is None


def test_int4_weights_need_16_bit_activations() -> None:
    with pytest.raises(ValidationError, match="weights: int4 needs dtype bfloat16 or float16"):
        LLMSettings(weights="int4", dtype="float32")
    assert LLMSettings(weights="int4", dtype="bfloat16").weights == "int4"


def test_a_failing_prefix_choice_falls_back_and_forgets_the_gone_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen on the real stack: after a redeploy the shared prefix tree named a replica that was gone,
    Ray's router raised KeyError, and Serve never routed the request. Ours falls back instead."""
    import asyncio
    from types import SimpleNamespace

    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    from deployments.llm_router import PrefixAffinityRouter, PrefixCacheAffinityRouter

    gone = ReplicaID("gone1234", DeploymentID(name="LLM:m", app_name="raychat"))

    async def stale_tree(self: object, candidates: object, pending: object = None) -> object:
        raise KeyError(gone)

    async def default_choice(self: object, candidate_replicas: object, pending_request: object = None) -> str:
        return "power-of-two"

    monkeypatch.setattr(PrefixCacheAffinityRouter, "choose_replicas", stale_tree)
    monkeypatch.setattr(PowerOfTwoChoicesRequestRouter, "choose_replicas", default_choice)
    removed: list[list[str]] = []
    router = PrefixAffinityRouter.__new__(PrefixAffinityRouter)
    router._tree_actor = SimpleNamespace(remove_tenants=SimpleNamespace(remote=removed.append))
    chat = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hello"}])
    chosen = asyncio.run(router.choose_replicas(["a", "b"], SimpleNamespace(args=[chat])))
    assert chosen == "power-of-two"
    assert removed == [[gone.to_full_id_str()]]
