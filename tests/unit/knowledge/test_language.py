"""A query's script, as hybrid search weighs it."""

from __future__ import annotations

import pytest

from knowledge.language import has_cjk, script


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("How do I stash staged changes?", "latin"),
        ("如何配置 APT 的代理？", "cjk"),
        ("如何配置 apt proxy", "cjk"),
        ("git stash 怎么用", "latin"),  # mostly Latin word characters
        ("", "latin"),
        ("???", "latin"),
        ("パッケージを更新する", "cjk"),
    ],
)
def test_script(text: str, expected: str) -> None:
    assert script(text) == expected


def test_has_cjk() -> None:
    assert has_cjk("apt 配置") and not has_cjk("apt config")
