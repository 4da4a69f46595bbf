"""Knowledge-base names: they become LanceDB table names, so they are checked before anything else.

Its own module (no LanceDB import) because the gateway's protocol, the batch jobs and the store all
check names the same way.
"""

from __future__ import annotations

import re
from typing import Any

from knowledge.errors import InvalidName

# Used with fullmatch: `$` alone would let a trailing newline through.
NAME_PATTERN = re.compile(r"[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9_\-\u4e00-\u9fff]{0,63}")


def check_name(name: Any) -> str:
    """No path separators, no `..`, at most 64 characters of letters, digits, CJK, '_' and '-'."""
    if not isinstance(name, str) or not name:
        raise InvalidName("knowledge base name must not be empty")
    if len(name) > 64:
        raise InvalidName(f"knowledge base name is {len(name)} characters; at most 64")
    if "/" in name or "\\" in name or ".." in name or not NAME_PATTERN.fullmatch(name):
        raise InvalidName(
            f"invalid knowledge base name {name!r}: letters, digits, CJK, '_' and '-' only, starting "
            "with a letter or digit"
        )
    return name
