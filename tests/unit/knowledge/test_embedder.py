"""The bundled sentence-transformers model, in-process: dimension, normalisation, token counts."""

from __future__ import annotations

import math
import threading

from knowledge.embedder import Embedder


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
