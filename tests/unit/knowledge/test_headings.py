"""Sections by heading: titles in text (Markdown, AsciiDoc, underlined), in HTML and DOCX, and the line each
chunk carries."""

from __future__ import annotations

import io

from knowledge.config import KnowledgeSettings
from knowledge.headings import Part, split_by_headings
from knowledge.ingest import prepare
from knowledge.loaders import load_bytes

ASCIIDOC = """git-add(1)
==========

NAME
----
git-add - Add file contents to the index

OPTIONS
-------
<pathspec>...::
\tFiles to add content from.

Interactive mode
~~~~~~~~~~~~~~~~
----
# not a title: a comment in a listing block
$ git add -i
----
Then choose a command.

== EXAMPLES
Adds content from all *.txt files.
"""


def test_asciidoc_titles_nest_and_listing_blocks_are_not_titles() -> None:
    parts = split_by_headings(ASCIIDOC)
    assert [p.headings for p in parts] == [
        ("git-add(1)", "NAME"),
        ("git-add(1)", "OPTIONS"),
        ("git-add(1)", "OPTIONS", "Interactive mode"),
        ("git-add(1)", "EXAMPLES"),
    ]
    assert "# not a title" in parts[2].text and parts[2].text.endswith("Then choose a command.")


def test_markdown_titles_fences_and_rules() -> None:
    text = "intro\n\n# Install\nsteps\n```sh\n# apt install x\n```\n\n----\n\n## On Debian\napt\n"
    parts = split_by_headings(text, asciidoc_blocks=False)
    assert parts[0] == Part((), "intro")
    assert parts[1].headings == ("Install",) and "# apt install x" in parts[1].text
    assert parts[2] == Part(("Install", "On Debian"), "apt")


def test_a_dashed_line_under_a_paragraph_or_of_another_length_is_not_an_underline() -> None:
    text = "first line\nsome words\n---\n\nShort\n--------------\nbody"
    assert [p.headings for p in split_by_headings(text)] == [()]


def test_html_headings_become_sections_and_a_hash_line_stays_text() -> None:
    html = (
        "<html><head><title>Handbook</title></head><body><p>front</p>"
        "<h1>第 15 章 创建软件包</h1><p>概述</p><h2>15.1. 获取源代码</h2><pre># apt source x</pre>"
        "<h2>15.2. 修改源码</h2><p>修改</p></body></html>"
    )
    sections = load_bytes("p.html", html.encode())
    assert [s.metadata.get("heading") for s in sections] == [
        None,
        "第 15 章 创建软件包",
        "第 15 章 创建软件包 > 15.1. 获取源代码",
        "第 15 章 创建软件包 > 15.2. 修改源码",
    ]
    assert sections[2].text == "# apt source x" and sections[0].metadata["title"] == "Handbook"


def test_docx_heading_styles_become_sections() -> None:
    import docx

    document = docx.Document()
    document.add_heading("Maintenance", level=1)
    document.add_paragraph("Check the pump weekly.")
    document.add_heading("Valves", level=2)
    document.add_paragraph("Test the relief valve yearly.")
    buffer = io.BytesIO()
    document.save(buffer)
    sections = load_bytes("manual.docx", buffer.getvalue())
    assert [(s.metadata.get("heading"), s.text) for s in sections] == [
        ("Maintenance", "Check the pump weekly."),
        ("Maintenance > Valves", "Test the relief valve yearly."),
    ]


def test_each_chunk_names_its_section_and_keeps_the_heading() -> None:
    text = "# Pumps\n\n## Maintenance\nCheck the seals weekly.\n\n## Valves\nTest yearly.\n"
    doc = prepare("plant.md", text.encode(), KnowledgeSettings())
    assert doc.texts == [
        "Pumps > Maintenance\nCheck the seals weekly.",  # the title is the first heading: said once
        "Pumps > Valves\nTest yearly.",
    ]
    assert doc.metadata[1]["heading"] == "Pumps > Valves"
    plain = prepare("plant.md", text.encode(), KnowledgeSettings(chunk_context="none"))
    assert plain.texts == ["Check the seals weekly.", "Test yearly."]
    titled = prepare("notes/plant.txt", text.encode(), KnowledgeSettings()).texts[1]
    assert titled == "plant > Pumps > Valves\nTest yearly."  # a text file's title is its name
    assert prepare("plant.txt", text.encode(), KnowledgeSettings(chunk_context="heading")).texts[1] == (
        "Pumps > Valves\nTest yearly."
    )
