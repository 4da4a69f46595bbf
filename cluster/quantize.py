"""A 4-bit weight-only export of a float model directory, for `llm.weights: int4`.

Every Linear of the decoder layers is rounded to nearest in groups of 32 along the input dimension (the
block of the bundled GGUF's Q4_1), with a scale and an integer zero point per group; embeddings, norms and
the head stay as they are. The checkpoint is written in the AWQ format (`quant_method: awq`), which vLLM
detects from config.json. Why AWQ and not GPTQ: vLLM 0.32 maps GPTQ only to symmetric types
(AutoGPTQConfig.TYPE_MAP has no sym=False), while its AWQ path takes asymmetric uint4 with zero points on CPU
(CPUWNA16LinearKernel) and on GPU (Marlin). Q4_1 is asymmetric (d*q + m), so an asymmetric grid of the same
block reproduces it within half a step; a symmetric one would not.

Tensors are read one at a time from the source's safetensors and the export is made once, in a staging
directory renamed into place, with a marker recording what it was made from.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.model_store import ModelStoreError

if TYPE_CHECKING:
    import torch

BITS = 4
GROUP_SIZE = 32  # the GGUF's Q4_1 block
PACK = 32 // BITS  # 4-bit values per int32
MAX_Q = (1 << BITS) - 1
# AutoAWQ's packing: nibble i of an int32 holds column AWQ_ORDER[i] of its 8; vLLM undoes it with
# _REVERSE_AWQ_PACK_ORDER = [0, 4, 1, 5, 2, 6, 3, 7] (auto_awq.py).
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
FORMAT = "raychat-awq-rtn-v1"  # bump when the export changes, so cached exports are made again
SUFFIX = "-int4-awq"
MARKER = "raychat-quant.json"
SOURCE_MARKER = "raychat-model.json"  # model_store's marker in the dequantised bundled model
QUANTIZATION_CONFIG = {
    "quant_method": "awq",
    "bits": BITS,
    "group_size": GROUP_SIZE,
    "zero_point": True,
    "version": "gemm",
    # None: vLLM leaves every layer whose weights are stored as floats unquantised (maybe_update_config).
    "modules_to_not_convert": None,
}
_DECODER_LINEAR = re.compile(r"^model\.layers\.(\d+)\..+\.weight$")
_SHARD_BYTES = 2 << 30  # a new safetensors file past this size; the bundled model fits in one


@dataclass(frozen=True)
class Quantized:
    """One weight [out, in] quantised by groups along `in`: w ~ (q - zero) * scale."""

    q: torch.Tensor  # int32 [out, in], 0..15
    scales: torch.Tensor  # float16 [groups, out]
    zeros: torch.Tensor  # int32 [groups, out], 0..15


def quantize_rtn(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> Quantized:
    """Round to nearest on an asymmetric 16-level grid per group of `group_size` inputs."""
    import torch

    out_features, in_features = weight.shape
    w = weight.float().reshape(out_features, in_features // group_size, group_size)
    # The range always holds 0, so the zero point is a level of the grid (0..15) and 0.0 is exact.
    lo = w.amin(dim=-1).clamp(max=0)
    hi = w.amax(dim=-1).clamp(min=0)
    tiny = torch.finfo(torch.float16).tiny  # an all-zero group still gets a finite, non-zero divisor
    scales = ((hi - lo) / MAX_Q).clamp(min=tiny).to(torch.float16)
    step = scales.float()  # quantise against the stored (fp16) scale, not the exact one
    zeros = torch.round(-lo / step).clamp(0, MAX_Q)
    q = torch.round(w / step[..., None] + zeros[..., None]).clamp(0, MAX_Q)
    return Quantized(
        q=q.reshape(out_features, in_features).to(torch.int32),
        scales=scales.t().contiguous(),
        zeros=zeros.t().contiguous().to(torch.int32),
    )


def dequantize(quantized: Quantized, group_size: int = GROUP_SIZE) -> torch.Tensor:
    """The float32 weight [out, in] that `quantized` stands for; the reference for the tests."""
    scales = quantized.scales.float().t().repeat_interleave(group_size, dim=1)
    zeros = quantized.zeros.t().repeat_interleave(group_size, dim=1)
    return (quantized.q - zeros).float() * scales


def pack_awq(values: torch.Tensor) -> torch.Tensor:
    """[rows, cols] of 0..15 -> int32 [rows, cols / 8], 8 columns per int32 in AWQ's nibble order."""
    import torch

    rows, cols = values.shape
    grouped = values.to(torch.int32).reshape(rows, cols // PACK, PACK)
    packed = torch.zeros(rows, cols // PACK, dtype=torch.int32)
    for nibble, column in enumerate(AWQ_ORDER):
        packed |= grouped[..., column] << (BITS * nibble)  # wraps into the sign bit as int32, as vLLM's does
    return packed


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_awq`."""
    import torch

    rows, words = packed.shape
    values = torch.empty(rows, words, PACK, dtype=torch.int32)
    for nibble, column in enumerate(AWQ_ORDER):
        values[..., column] = (packed >> (BITS * nibble)) & MAX_Q
    return values.reshape(rows, words * PACK)


def awq_tensors(prefix: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three checkpoint tensors of one Linear: qweight [in, out/8], qzeros [groups, out/8], scales."""
    quantized = quantize_rtn(weight)
    return {
        f"{prefix}.qweight": pack_awq(quantized.q.t().contiguous()),
        f"{prefix}.qzeros": pack_awq(quantized.zeros),
        f"{prefix}.scales": quantized.scales,
    }


def export_dir_for(source: Path, models_dir: Path) -> Path:
    return models_dir / f"{source.name}{SUFFIX}"


def source_fingerprint(source: Path) -> str:
    """Names, sizes and mtimes of what the export reads: a re-converted or replaced model changes it."""
    entries = [
        [path.name, path.stat().st_size, path.stat().st_mtime_ns]
        for path in sorted(source.iterdir())
        if path.suffix == ".safetensors" or path.name in ("config.json", SOURCE_MARKER)
    ]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def prepare_int4(source: Path, models_dir: Path) -> Path:
    """Return the 4-bit export of the model in `source`, making it on first use."""
    out_dir = export_dir_for(source, models_dir)
    fingerprint = source_fingerprint(source)
    marker = out_dir / MARKER
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded.get("format") == FORMAT and recorded.get("source_fingerprint") == fingerprint:
            return out_dir
    export_int4(source, out_dir, fingerprint=fingerprint)
    return out_dir


def _check_source(source: Path) -> tuple[dict[str, object], list[Path]]:
    config_path = source / "config.json"
    if not config_path.exists():
        raise ModelStoreError(f"{source}: no config.json, nothing to quantise")
    config = json.loads(config_path.read_text())
    if config.get("quantization_config"):
        raise ModelStoreError(f"{source} is already quantised; use llm.weights: full for it")
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise ModelStoreError(f"{source}: llm.weights=int4 needs safetensors weights, found none")
    return config, weights


def _linear_keys(handles: dict[str, Any]) -> dict[str, int]:
    """Decoder-layer Linear weights (2-D, under model.layers.N.) and their layer index."""
    found: dict[str, int] = {}
    for key, handle in handles.items():
        match = _DECODER_LINEAR.match(key)
        if match and len(handle.get_slice(key).get_shape()) == 2:
            found[key] = int(match.group(1))
    return found


def export_int4(source: Path, out_dir: Path, *, fingerprint: str | None = None) -> None:
    """Write the AWQ-format export of `source` to `out_dir`, atomically."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    config, weight_files = _check_source(source)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    sys.stderr.write(f"quantising {source.name} to 4 bits (AWQ, groups of {GROUP_SIZE}) into {out_dir}\n")
    with _Shards(staging, save_file) as shards:
        opened = [safe_open(str(path), framework="pt") for path in weight_files]
        handles = {key: handle for handle in opened for key in handle.keys()}
        linear = _linear_keys(handles)
        layers = max(linear.values(), default=-1) + 1
        done = -1
        # Layer by layer: one tensor in memory at a time, and a progress line per decoder layer.
        for key in sorted(handles, key=lambda k: (linear.get(k, -1), k)):
            tensor = handles[key].get_tensor(key)
            if key in linear:
                out_features, in_features = tensor.shape
                if in_features % GROUP_SIZE or out_features % 32:
                    raise ModelStoreError(
                        f"{key}: shape {tuple(tensor.shape)} does not fit 4-bit groups of {GROUP_SIZE} "
                        "(vLLM's CPU kernel needs both sizes to be multiples of 32); use llm.weights: full"
                    )
                shards.add(awq_tensors(key.removesuffix(".weight"), tensor))
                if linear[key] != done:
                    done = linear[key]
                    sys.stderr.write(f"\r  quantising: layer {done + 1}/{layers}")
                    sys.stderr.flush()
            else:
                shards.add({key: tensor})
    sys.stderr.write("\n")
    _write_config(source, staging, config)
    marker = {
        "format": FORMAT,
        "quantization_config": QUANTIZATION_CONFIG,
        "source": str(source.resolve()),
        "source_fingerprint": fingerprint or source_fingerprint(source),
        "sha256": {name: _sha256(staging / name) for name in shards.names},
    }
    (staging / MARKER).write_text(json.dumps(marker, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)  # atomic: a crash never leaves a half-written export in place


def _write_config(source: Path, staging: Path, config: dict[str, object]) -> None:
    """config.json with the quantization_config vLLM detects, and the tokenizer and other small files."""
    for path in source.iterdir():
        if path.is_file() and path.name not in ("config.json", SOURCE_MARKER, "model.safetensors.index.json"):
            if path.suffix != ".safetensors":
                shutil.copy2(path, staging / path.name)
    config = dict(config, quantization_config=QUANTIZATION_CONFIG)
    # AWQ's scales are float16; `dtype: auto` then picks a 16-bit type the 4-bit kernels accept.
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float16"
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class _Shards:
    """Collects output tensors and writes a safetensors file whenever `_SHARD_BYTES` is reached."""

    def __init__(self, directory: Path, save_file: Callable[..., None]) -> None:
        self.directory = directory
        self.save_file = save_file
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.parts: list[tuple[str, list[str]]] = []  # (file, its tensor names)
        self.names: list[str] = []

    def __enter__(self) -> _Shards:
        return self

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, tensor in tensors.items():
            self.pending[name] = tensor.contiguous()
            self.pending_bytes += tensor.numel() * tensor.element_size()
        if self.pending_bytes >= _SHARD_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        part = f"part-{len(self.parts)}.safetensors"
        self.save_file(self.pending, str(self.directory / part), metadata={"format": "pt"})
        self.parts.append((part, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            return
        self._flush()
        if len(self.parts) == 1:
            (self.directory / self.parts[0][0]).rename(self.directory / "model.safetensors")
            self.names = ["model.safetensors"]
            return
        # Hugging Face's sharded layout: model-0000i-of-0000n.safetensors and an index of tensor -> file.
        weight_map: dict[str, str] = {}
        for i, (part, keys) in enumerate(self.parts, start=1):
            name = f"model-{i:05d}-of-{len(self.parts):05d}.safetensors"
            (self.directory / part).rename(self.directory / name)
            weight_map.update(dict.fromkeys(keys, name))
            self.names.append(name)
        index = {"metadata": {}, "weight_map": weight_map}
        (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
