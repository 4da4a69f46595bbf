from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors import safe_open

from cluster import model_store, quantize
from cluster.model_store import ModelStoreError
from deployments.config import LLMSettings

REPO = Path(__file__).resolve().parents[3]


def _q4_1_weights(rows: int, groups: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights as a Q4_1 GGUF dequantises them: d*q + m per block of 32, d and m in float16, every block
    using levels 0 and 15 (Q4_1 takes d = (max - min) / 15, m = min) and spanning 0, as real blocks do."""
    d = (torch.rand(rows, groups, 1, generator=generator) * 0.02 + 1e-3).half().float()
    m = -d * torch.randint(1, 15, (rows, groups, 1), generator=generator)
    m = (m - d * torch.rand(rows, groups, 1, generator=generator)).half().float()
    q = torch.randint(0, 16, (rows, groups, quantize.GROUP_SIZE), generator=generator).float()
    q[..., 0], q[..., 1] = 0, 15
    return (d * q + m).reshape(rows, groups * quantize.GROUP_SIZE), d.reshape(rows, groups)


def _from_checkpoint(tensors: dict[str, torch.Tensor], prefix: str) -> quantize.Quantized:
    """Read our own AWQ tensors back into (q, scales, zeros)."""
    return quantize.Quantized(
        q=quantize.unpack_awq(tensors[f"{prefix}.qweight"]).t(),
        scales=tensors[f"{prefix}.scales"],
        zeros=quantize.unpack_awq(tensors[f"{prefix}.qzeros"]),
    )


def _steps(error: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Worst absolute error of each group, in units of that group's step."""
    rows = error.shape[0]
    return error.abs().reshape(rows, -1, quantize.GROUP_SIZE).amax(-1) / scales.float().t()


def test_pack_unpack_round_trip() -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(0, 16, (64, 96), generator=generator, dtype=torch.int32)
    packed = quantize.pack_awq(values)
    assert packed.shape == (64, 12) and packed.dtype == torch.int32
    assert torch.equal(quantize.unpack_awq(packed), values)
    # AWQ's order: columns 0 and 1 of each 8 sit in nibbles 0 and 4.
    one = torch.zeros(1, 8, dtype=torch.int32)
    one[0, 1] = 15
    assert quantize.pack_awq(one).item() == 15 << 16


def test_checkpoint_tensors_reproduce_rtn_exactly() -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(96, 128, generator=generator) * 0.05
    tensors = quantize.awq_tensors("layer", weight)
    assert tensors["layer.qweight"].shape == (128, 12)
    assert tensors["layer.qzeros"].shape == (4, 12) and tensors["layer.scales"].shape == (4, 96)
    rtn = quantize.quantize_rtn(weight)
    unpacked = _from_checkpoint(tensors, "layer")
    assert torch.equal(quantize.dequantize(unpacked), quantize.dequantize(rtn))
    # Half a step, give or take the scale's rounding to float16 (the ends of the range: 15 steps of it).
    assert _steps(quantize.dequantize(rtn) - weight, rtn.scales).max() <= 0.5 + 15 * 2**-11


def test_q4_1_grid_round_trips_within_half_a_step() -> None:
    weight, d = _q4_1_weights(64, 6, torch.Generator().manual_seed(2))
    rtn = quantize.quantize_rtn(weight)
    assert torch.equal(rtn.scales.float().t(), d)  # the GGUF's own step
    assert _steps(quantize.dequantize(rtn) - weight, rtn.scales).max() <= 0.5


def test_zeros_stay_exact() -> None:
    weight = torch.zeros(32, 64)
    weight[0, 32:] = torch.linspace(-1, 0.3, 32)
    weight[0, 40] = 0.0
    deq = quantize.dequantize(quantize.quantize_rtn(weight))
    assert torch.equal(deq[1:], weight[1:])  # all-zero groups
    assert deq[0, 40] == 0  # the grid always holds 0


def test_int4_needs_16_bit_activations() -> None:
    for dtype in ("float32", "auto"):
        with pytest.raises(ValidationError, match="weights: int4 needs dtype bfloat16 or float16"):
            LLMSettings(weights="int4", dtype=dtype)
    assert LLMSettings(weights="int4", dtype="float16").weights == "int4"
    assert LLMSettings(dtype="float32").weights == "full"


def test_full_weights_are_the_model_itself(tmp_path: Path) -> None:
    assert model_store.resolve_weights(tmp_path, "full", tmp_path / "models") == tmp_path
    with pytest.raises(ModelStoreError, match="llm.weights"):
        model_store.resolve_weights(tmp_path, "int8", tmp_path / "models")


@pytest.fixture(scope="module")
def bundled_model() -> Path:
    """The dequantised bundled model as `raychat prepare-model` (or the test stack) left it; on a fresh
    clone it is prepared here, into the test stack's data dir, which the stack then reuses."""
    bundled = model_store.find_bundled_gguf()
    name = f"{bundled.path.stem}-{bundled.sha256[:12]}"
    for data_dir in (REPO / "data", REPO / ".test-data"):
        candidate = data_dir / "models" / name
        if (candidate / "raychat-model.json").exists() and (candidate / "config.json").exists():
            return candidate
    return model_store.prepare_bundled(REPO / ".test-data" / "models")


@pytest.fixture(scope="module")
def export(bundled_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize.prepare_int4(bundled_model, tmp_path_factory.mktemp("models"))


def test_bundled_export(bundled_model: Path, export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert export.name == f"{bundled_model.name}-int4-awq" and not export.with_suffix(".partial").exists()
    config = json.loads((export / "config.json").read_text())
    assert config["quantization_config"] == quantize.QUANTIZATION_CONFIG
    marker = json.loads((export / quantize.MARKER).read_text())
    assert marker["source_fingerprint"] == quantize.source_fingerprint(bundled_model)
    assert (export / "tokenizer.json").exists()
    with safe_open(str(export / "model.safetensors"), framework="pt") as out:
        keys = set(out.keys())
        assert "model.embed_tokens.weight" in keys  # embeddings stay float
        assert not any(k.startswith("model.layers.") and k.endswith("_proj.weight") for k in keys)
        assert len([k for k in keys if k.endswith(".qweight")]) == 7 * config["num_hidden_layers"]
        # The bundled weights are Q4_1: each group comes back within half its step.
        with safe_open(str(bundled_model / "model.safetensors"), framework="pt") as src:
            prefix = "model.layers.0.mlp.down_proj"
            tensors = {k: out.get_tensor(k) for k in keys if k.startswith(prefix)}
            quantized = _from_checkpoint(tensors, prefix)
            weight = src.get_tensor(f"{prefix}.weight")
            assert _steps(quantize.dequantize(quantized) - weight, quantized.scales).max() <= 0.5
    # Made once: a second call finds the marker and writes nothing.
    monkeypatch.setattr(quantize, "export_int4", lambda *a, **k: pytest.fail("exported again"))
    assert quantize.prepare_int4(bundled_model, export.parent) == export


@pytest.fixture(scope="module")
def vllm_single_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """vLLM's parameters ask for the tensor-parallel rank: a gloo group of one, no engine."""
    pytest.importorskip("vllm")
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import (
        destroy_distributed_environment,
        destroy_model_parallel,
        init_distributed_environment,
        initialize_model_parallel,
    )

    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(
            world_size=1,
            rank=0,
            local_rank=0,
            distributed_init_method=f"file://{tmp_path_factory.mktemp('gloo') / 'rendezvous'}",
            backend="gloo",
        )
        initialize_model_parallel(1, 1)
    yield
    destroy_model_parallel()
    destroy_distributed_environment()


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 2e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.usefixtures("vllm_single_process")
def test_vllm_awq_layer_computes_our_weights(export: Path, dtype: torch.dtype, tolerance: float) -> None:
    """One exported Linear through vLLM's own AWQ method and CPU kernel matches x @ W_rtn^T. float16 runs
    the w4a16 kernel; bfloat16 on an AMX host runs w4a8 (activations to int8), hence the wider bound."""
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.quantization.auto_awq import AutoAWQConfig

    prefix = "model.layers.0.mlp.down_proj"
    with safe_open(str(export / "model.safetensors"), framework="pt") as out:
        tensors = {k: out.get_tensor(k) for k in out.keys() if k.startswith(prefix)}
    config = AutoAWQConfig.from_config(quantize.QUANTIZATION_CONFIG)
    in_features, out_features = tensors[f"{prefix}.qweight"].shape[0], tensors[f"{prefix}.scales"].shape[1]
    layer = ReplicatedLinear(
        in_features, out_features, bias=False, quant_config=config, params_dtype=dtype, prefix=prefix
    )
    for name in ("qweight", "qzeros", "scales"):
        param = getattr(layer, name)
        param.weight_loader(param, tensors[f"{prefix}.{name}"])
    layer.quant_method.process_weights_after_loading(layer)

    x = torch.randn(4, in_features, generator=torch.Generator().manual_seed(3)).to(dtype)
    expected = x.float() @ quantize.dequantize(_from_checkpoint(tensors, prefix)).t()
    actual, _ = layer(x)
    assert ((actual.float() - expected).norm() / expected.norm()).item() < tolerance
