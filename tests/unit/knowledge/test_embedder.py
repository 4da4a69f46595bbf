"""The bundled sentence-transformers model, in-process: dimension, normalisation, token counts."""

from __future__ import annotations

import math

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
