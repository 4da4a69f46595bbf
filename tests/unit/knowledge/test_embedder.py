"""The bundled sentence-transformers model, in-process: dimension, normalisation, token counts."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from knowledge.embedder import Embedder
from knowledge.onnx_backend import BackendError


def test_bundled_model_embeds_and_counts_tokens() -> None:
    embedder = Embedder()
    texts = ["pump", "the valve closes under high pressure", "泵需要定期维护"]
    vectors = embedder.embed(texts)
    assert embedder.dim == 384 and [len(v) for v in vectors] == [384] * 3
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    assert embedder.count_tokens(texts) > embedder.count_tokens(["pump"]) * 3
    similar = sum(a * b for a, b in zip(embedder.embed(["water pump"])[0], vectors[0], strict=True))
    unrelated = sum(a * b for a, b in zip(embedder.embed(["birthday cake"])[0], vectors[0], strict=True))
    assert similar > unrelated


def test_counting_tokens_while_embedding_in_another_thread_breaks_neither() -> None:
    # The Embedding deployment counts a request's tokens while a batch is being embedded.
    embedder = Embedder()
    texts = ["the valve closes under high pressure " * 6, "pump"] * 4
    errors: list[BaseException] = []

    def embed() -> None:
        for _ in range(60):
            try:
                assert len(embedder.embed(texts)) == len(texts)
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                errors.append(exc)

    thread = threading.Thread(target=embed)
    thread.start()
    counts = set()
    while thread.is_alive():
        counts.add(embedder.count_tokens(texts[:2]))
    thread.join()
    assert errors == [] and len(counts) == 1


def test_a_smaller_dimension_cuts_then_normalises_each_vector() -> None:
    full, cut = Embedder(), Embedder(dimension=128)
    text = ["the valve closes under high pressure"]
    short = cut.embed(text)[0]
    assert cut.dim == 128 and len(short) == 128
    assert math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-4)
    head = full.embed(text)[0][:128]
    norm = math.sqrt(sum(x * x for x in head))
    assert all(math.isclose(a, b / norm, abs_tol=1e-4) for a, b in zip(short, head, strict=True))


def test_another_embedding_gets_tables_of_its_own() -> None:
    from knowledge.config import KnowledgeSettings

    assert KnowledgeSettings().default_store_name() == "knowledge"
    cut = KnowledgeSettings(embedding_dimension=128).default_store_name()
    other = KnowledgeSettings(embedding_model="/models/bge", embedding_model_id="bge").default_store_name()
    assert cut.startswith("knowledge-") and other.startswith("knowledge-") and cut != other


def test_onnx_backends_export_once_and_give_the_models_vectors(tmp_path: Path) -> None:
    import numpy as np

    texts = ["the relief valve is tested yearly", "泵需要定期维护", "x"]
    reference = np.array(Embedder().embed(texts))
    said: list[str] = []
    onnx = Embedder(backend="onnx", cache_dir=tmp_path, say=said.append)
    assert np.allclose(np.array(onnx.embed(texts)), reference, atol=1e-4)  # the same vectors
    int8 = Embedder(backend="onnx-int8", cache_dir=tmp_path, say=said.append)
    close = (np.array(int8.embed(texts)) * reference).sum(axis=1)
    assert close.min() > 0.97 and not np.allclose(close, 1.0, atol=1e-4)  # near, not the same
    exported = sorted(p.name for p in tmp_path.rglob("*.onnx"))
    assert exported == ["model.onnx", "model_int8.onnx"]
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.onnx")}
    said.clear()
    again = Embedder(backend="onnx-int8", cache_dir=tmp_path, dimension=128, say=said.append)
    assert said == [] and {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.onnx")} == stamp  # cached
    cut = again.embed(texts)
    assert len(cut[0]) == 128 and math.isclose(sum(x * x for x in cut[0]), 1.0, rel_tol=1e-4)


def test_an_unknown_backend_or_a_missing_cache_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="torch, onnx or onnx-int8"):
        Embedder(backend="tensorrt", cache_dir=tmp_path)
    with pytest.raises(BackendError, match="embedding_cache_dir"):
        Embedder(backend="onnx")


def test_int8_weights_are_another_embedding_and_float32_onnx_is_not() -> None:
    from knowledge.config import KnowledgeSettings

    torch_cfg = KnowledgeSettings()
    assert KnowledgeSettings(embedding_backend="onnx").embedding_identity() == torch_cfg.embedding_identity()
    assert KnowledgeSettings(embedding_backend="onnx").default_store_name() == "knowledge"
    int8 = KnowledgeSettings(embedding_backend="onnx-int8")
    assert int8.embedding_identity() != torch_cfg.embedding_identity()
    assert int8.default_store_name().startswith("knowledge-")
