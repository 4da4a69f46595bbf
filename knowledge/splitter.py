"""Chinese-aware recursive splitting on LangChain's RecursiveCharacterTextSplitter.

Separators go from coarse to fine: paragraphs, lines, then sentence ends in Chinese (。！？；…) and Latin
punctuation, then clause marks, then spaces. Punctuation stays at the end of its sentence. The last
resort (splitting between characters) is only reached by a run longer than a chunk with no separator at
all, such as an unbroken Chinese paragraph; Latin words are never cut while a space can be used.
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from knowledge.config import KnowledgeSettings

SEPARATORS = [
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    "；",
    "……",
    "…",
    ". ",
    "! ",
    "? ",
    "; ",
    "，",
    "、",
    ", ",
    "：",
    ": ",
    " ",
    "",
]


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str


def make_splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    if chunk_overlap >= chunk_size:
        raise ValueError(f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})")
    return RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        length_function=len,
        strip_whitespace=True,
    )


def split_text(text: str, settings: KnowledgeSettings | None = None) -> list[Chunk]:
    cfg = settings or KnowledgeSettings()
    splitter = make_splitter(cfg.chunk_size, cfg.chunk_overlap)
    pieces = [p for p in splitter.split_text(text) if p.strip()]
    return [Chunk(i, p) for i, p in enumerate(pieces)]
