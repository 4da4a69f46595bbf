"""A document's text cut at its headings, each part with the path of headings above it.

Chunks then never straddle two sections, and each chunk keeps its section's heading path as metadata
(`heading`), shown with the source and given to the embedder and full-text index with the text, so a
passage is found by what its section is about as well as by its own words.

Recognised in text: Markdown and AsciiDoc titles written with leading marks (`## Options`, `== Options`)
and titles underlined with a line of one mark (`Options` over `-------`: AsciiDoc, reStructuredText,
Markdown's setext). Lines inside fenced code blocks (and, outside Markdown, AsciiDoc's `----` and `....`
blocks) are never titles. HTML, DOCX and EPUB loaders mark their heading elements with `marked` (a
control-character line no text contains) and are split on those alone (`plain_titles=False`), so a
`# command` line in their text stays text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A leading-mark title: 1-6 '#' or '=' then a space (AsciiDoc's document title is one '=').
_MARKED = re.compile(r"^(#{1,6}|={1,6})[ \t]+(\S.*?)[ \t#=]*$")
# Underline marks by level, as AsciiDoc orders them (reStructuredText has no fixed order; this is close).
_UNDERLINES = "=-~^+"
_SENTINEL = "\x02"  # STX: neither whitespace nor a line break to str.strip() and splitlines()
_MARKER = re.compile(r"^\x02([1-6])\x02(.*)$")
_LINE_BREAK = re.compile(r"\r\n?|\n")
_FENCE = re.compile(r"^(```|~~~)")
# AsciiDoc's delimited listing and literal blocks (a '# comment' inside one is not a title).
_DELIMITED = re.compile(r"^(-{4,}|\.{4,})$")
MAX_HEADING_CHARS = 120


@dataclass(frozen=True)
class Part:
    headings: tuple[str, ...]
    text: str


def marked(level: int, title: str) -> str:
    """A title line for loaders whose format marks headings itself (HTML's h1-h6, DOCX heading styles)."""
    return f"\n{_SENTINEL}{min(max(level, 1), 6)}{_SENTINEL}{' '.join(title.split())}\n"


def _underline_level(title: str, underline: str) -> int | None:
    mark = underline[:1]
    if (
        mark not in _UNDERLINES
        or len(underline) < 3
        or underline.strip(mark)
        or not title.strip()
        or title[:1].isspace()
        or title.strip()[:1] in _UNDERLINES
        or abs(len(underline) - len(title.rstrip())) > 2
    ):
        return None
    return _UNDERLINES.index(mark)


def split_by_headings(text: str, *, plain_titles: bool = True, asciidoc_blocks: bool = True) -> list[Part]:
    """`text` in parts, one per section, in order. Text before the first title is a part with no
    headings; a section with only its title adds nothing. `plain_titles` False: only `marked` lines are
    titles. `asciidoc_blocks` False for Markdown, where a `----` line is a rule."""
    lines = _LINE_BREAK.split(text)  # not splitlines(): it also breaks at form feeds and \x1c-\x1e
    path: list[tuple[int, str]] = []
    parts: list[Part] = []
    body: list[str] = []
    fenced: str | None = None  # the line that opened the code block we are in

    def flush() -> None:
        joined = "\n".join(body).strip()
        if joined:
            parts.append(Part(tuple(title for _, title in path), joined))
        body.clear()

    def enter(level: int, title: str) -> None:
        flush()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title[:MAX_HEADING_CHARS]))

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        sentinel = _MARKER.match(line)
        if sentinel:
            if sentinel.group(2).strip():
                enter(int(sentinel.group(1)) - 1, sentinel.group(2).strip())
            i += 1
            continue
        if not plain_titles:
            body.append(lines[i])
            i += 1
            continue
        if fenced is not None:
            if line == fenced or (fenced[:3] in ("```", "~~~") and line.startswith(fenced[:3])):
                fenced = None
        elif _FENCE.match(line) or (asciidoc_blocks and _DELIMITED.match(line)):
            fenced = line
        else:
            found = _MARKED.match(line)
            if found:
                enter(len(found.group(1)) - 1, found.group(2).strip())
                i += 1
                continue
            following = lines[i + 1].rstrip() if i + 1 < len(lines) else ""
            level = _underline_level(line, following)
            if level is not None and (not body or not body[-1].strip()):
                enter(level, line.strip())
                i += 2
                continue
        body.append(lines[i])
        i += 1
    flush()
    return parts
