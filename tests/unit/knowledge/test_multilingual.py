"""The multilingual model (`knowledge.embedding_model: multilingual`), in-process: checked weights, vectors
that match Chinese to Chinese and across languages, token counts, its settings defaults."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from knowledge.config import MULTILINGUAL_WEIGHTS, KnowledgeSettings
from knowledge.embedder import Embedder
from knowledge.multilingual import ModelIntegrityError, resources_dir, verify


def test_reads_chinese_and_matches_it_across_languages() -> None:
    embedder = Embedder("multilingual")
    question, answer, unrelated, english = embedder.embed(
        [
            "如何配置防火墙？",
            "使用 nftables 配置防火墙规则。",
            "生日蛋糕的做法",
            "How do I configure the firewall?",
        ]
    )
    assert embedder.dim == 512 and embedder.name == "universal-sentence-encoder-multilingual-3"
    assert math.isclose(float(np.dot(question, question)), 1.0, rel_tol=1e-4)
    assert np.dot(question, answer) > np.dot(question, unrelated)
    assert np.dot(question, english) > np.dot(question, unrelated)
    assert (
        embedder.count_tokens(["防火墙", "防火墙规则和网络地址转换"]) > embedder.count_tokens(["防火墙"]) * 2
    )


def test_a_smaller_dimension_cuts_then_normalises() -> None:
    full, cut = Embedder("multilingual"), Embedder("multilingual", dimension=128)
    head = np.array(full.embed(["泵需要定期维护"])[0][:128])
    short = np.array(cut.embed(["泵需要定期维护"])[0])
    assert cut.dim == 128 and np.allclose(short, head / np.linalg.norm(head), atol=1e-5)


def test_weights_that_are_not_the_pinned_ones_are_refused(tmp_path: Path) -> None:
    verify(resources_dir())  # the installed package is the pinned one
    copy = tmp_path / "resources"
    shutil.copytree(resources_dir(), copy)
    with (copy / "weights.npz").open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01")
    with pytest.raises(ModelIntegrityError, match=r"weights\.npz has sha256"):
        verify(copy)
    (copy / "sp.model").unlink()
    with pytest.raises(ModelIntegrityError, match=r"sp\.model is missing"):
        verify(copy)


def test_one_setting_brings_its_name_weights_and_tables() -> None:
    cfg = KnowledgeSettings(embedding_model="multilingual")
    assert cfg.embedding_model_id == "universal-sentence-encoder-multilingual-3"
    assert cfg.hybrid_weights == MULTILINGUAL_WEIGHTS
    assert cfg.default_store_name().startswith("knowledge-")
    assert cfg.default_store_name() != KnowledgeSettings().default_store_name()
    own = KnowledgeSettings(
        embedding_model="multilingual", embedding_model_id="use", hybrid_weights={"cjk": {"vector": 2.0}}
    )
    assert own.embedding_model_id == "use" and own.hybrid_weights["cjk"].vector == 2.0
    assert own.hybrid_weights["latin"].vector == 1.0  # what was not set gets equal weights


def test_it_runs_on_numpy_only() -> None:
    with pytest.raises(ValidationError, match="embedding_backend"):
        KnowledgeSettings(embedding_model="multilingual", embedding_backend="onnx")
