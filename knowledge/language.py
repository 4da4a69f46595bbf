"""Which script a text is written in, as far as search cares: CJK (Chinese, Japanese, Korean: words not
separated by spaces) or Latin (everything else). Hybrid search weighs its rankings by the query's script,
and full-text search segments CJK text into words."""

from __future__ import annotations

import re

from knowledge.config import Script

# Han (with extension A and compatibility ideographs), kana and hangul syllables.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_WORD_CHAR = re.compile(r"\w")

# A CJK character carries about as much as a short Latin word: a query with a third of its word
# characters in CJK is read as CJK ("如何配置 apt proxy" is).
CJK_SHARE = 0.3


def script(text: str) -> Script:
    letters = len(_WORD_CHAR.findall(text))
    if not letters:
        return "latin"
    return "cjk" if len(_CJK.findall(text)) / letters >= CJK_SHARE else "latin"


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None
