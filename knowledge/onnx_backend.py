"""The embedding model run by ONNX Runtime instead of PyTorch (`knowledge.embedding_backend: onnx` or
`onnx-int8`).

sentence-transformers' own ONNX backend needs optimum, whose releases pin transformers below the version
vLLM needs; so the transformer is exported here with torch's exporter, once, into the cache under the data
dir (`knowledge.embedding_cache_dir`), keyed by a digest of the weights, and `onnx-int8` quantises it
with ONNX Runtime's dynamic quantisation (int8 weights, per channel). Tokenising stays the model's own
tokenizer; pooling is the model's mean pooling, done here in numpy.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class BackendError(RuntimeError):
    """The model cannot run on this backend; the message names why."""


def weights_digest(model_path: str) -> str:
    for name in WEIGHT_FILES:
        path = Path(model_path) / name
        if path.exists():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()[:16]
    raise BackendError(f"{model_path}: no {' or '.join(WEIGHT_FILES)} to export")


def check_mean_pooling(model: Any) -> None:
    """The export covers the transformer; pooling is redone here, so it must be plain mean pooling."""
    modules = list(model)
    pooling = next((m for m in modules if type(m).__name__ == "Pooling"), None)
    config = pooling.get_config_dict() if pooling is not None else {}
    mean = config.get("pooling_mode") == "mean" or config.get("pooling_mode_mean_tokens") is True
    if not mean or any(type(m).__name__ not in ("Transformer", "Pooling", "Normalize") for m in modules):
        raise BackendError(
            "knowledge.embedding_backend onnx runs models made of a transformer and mean pooling; this "
            f"model has {[type(m).__name__ for m in modules]}: use embedding_backend torch"
        )


def _atomic(target: Path, make: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        part = Path(tmp) / target.name
        make(part)
        os.replace(part, target)


def export(model: Any, model_path: str, cache_dir: Path, *, int8: bool, say: Callable[[str], None]) -> Path:
    """The ONNX file for `model` (a loaded SentenceTransformer), exported on first use. Several replicas
    starting at once take a file lock: one exports, the others then find it."""
    out = Path(cache_dir) / f"{Path(model_path).name}-{weights_digest(model_path)}"
    out.mkdir(parents=True, exist_ok=True)
    fp32, quantised = out / "model.onnx", out / "model_int8.onnx"
    target = quantised if int8 else fp32
    if target.exists():
        return target
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not fp32.exists():
            started = time.monotonic()
            say(f"embedding: exporting {Path(model_path).name} to ONNX in {out}")
            _atomic(fp32, lambda part: _export_fp32(model, part))
            say(f"embedding: exported in {time.monotonic() - started:.1f}s")
        if int8 and not quantised.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            say("embedding: quantising to int8 (dynamic, per channel)")
            _atomic(
                quantised,
                lambda part: quantize_dynamic(
                    str(fp32), str(part), weight_type=QuantType.QInt8, per_channel=True
                ),
            )
    return target


def _export_fp32(model: Any, path: Path) -> None:
    import torch

    transformer = model[0].auto_model.eval()

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    sample = model.tokenizer(["an example sentence"], return_tensors="pt", return_token_type_ids=True)
    with torch.no_grad():
        torch.onnx.export(
            LastHidden(),
            tuple(sample[name] for name in INPUTS),
            str(path),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in [*INPUTS, "last_hidden_state"]},
            opset_version=18,
            dynamo=False,
        )


class OnnxEncoder:
    """Texts to mean-pooled vectors with an exported model (not normalised: the caller cuts and norms)."""

    def __init__(self, onnx_path: Path, tokenizer: Any, max_seq_length: int, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        # Longest first, as sentence-transformers does: a batch of similar lengths pads little, where a
        # short chunk beside a long one would be padded (and computed) to the long one's length.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        ordered = [texts[i] for i in order]
        out = []
        for start in range(0, len(ordered), batch_size):
            batch = self.tokenizer(
                ordered[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="np",
                return_token_type_ids=True,
            )
            feed = {k: batch[k].astype(np.int64) for k in INPUTS if k in self.inputs}
            hidden = self.session.run(None, feed)[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            out.append((hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9))
        pooled = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        pooled[order] = np.concatenate(out)
        return pooled
