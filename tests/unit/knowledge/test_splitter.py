from __future__ import annotations

import re

import pytest

from knowledge.config import KnowledgeSettings
from knowledge.splitter import split_text

ZH = (
    "人工智能正在改变制造业的生产方式。工厂通过传感器收集设备数据，并用模型预测故障！"
    "这样可以减少停机时间吗？当然可以；维护团队也能提前准备备件……"
) * 30
EN = (
    "The maintenance team inspects every machine on Monday. Sensors report temperature and vibration! "
    "Is the bearing worn? Replace it before the next shift; keep a log of each repair. "
) * 30


def test_defaults_match_langchain_chatchat() -> None:
    cfg = KnowledgeSettings()
    assert (cfg.chunk_size, cfg.chunk_overlap) == (750, 150)


def test_chinese_chunks_respect_size_and_end_on_sentence_marks() -> None:
    chunks = split_text(ZH, KnowledgeSettings(chunk_size=120, chunk_overlap=30))
    assert len(chunks) > 5
    assert all(len(c.text) <= 120 for c in chunks)
    # every chunk but the last ends at a Chinese sentence or clause mark, not mid-sentence
    assert all(c.text[-1] in "。！？；…，" for c in chunks[:-1])
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunks_overlap() -> None:
    chunks = split_text(EN, KnowledgeSettings(chunk_size=200, chunk_overlap=60))
    overlaps = sum(1 for a, b in zip(chunks, chunks[1:], strict=False) if b.text[:20] in a.text)
    assert overlaps >= len(chunks) // 2


def test_english_never_breaks_a_word() -> None:
    words = set(re.findall(r"[A-Za-z]+", EN))
    chunks = split_text(EN, KnowledgeSettings(chunk_size=100, chunk_overlap=20))
    for chunk in chunks:
        assert all(w in words for w in re.findall(r"[A-Za-z]+", chunk.text)), chunk.text
        assert len(chunk.text) <= 100


def test_all_text_is_covered() -> None:
    chunks = split_text(ZH, KnowledgeSettings(chunk_size=200, chunk_overlap=0))
    assert "".join(c.text for c in chunks).replace(" ", "") == ZH.replace(" ", "")


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ValueError):
        KnowledgeSettings(chunk_size=100, chunk_overlap=100)
