"""Every loader on real files the test writes with the format's own library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.loaders import LoadError, UnsupportedFormat, load_bytes, load_file

ZH = "知识库支持中文文档。银行客户数据必须加密保存。"


def test_utf8_and_gbk_chinese_text(tmp_path: Path) -> None:
    (tmp_path / "utf8.txt").write_bytes(ZH.encode("utf-8"))
    (tmp_path / "gbk.txt").write_bytes((ZH * 5).encode("gbk"))
    assert load_file(tmp_path / "utf8.txt")[0].text == ZH
    gbk = load_file(tmp_path / "gbk.txt")[0]
    assert gbk.text == ZH * 5
    assert gbk.metadata["encoding"] in {"gb18030", "gbk", "gb2312"}
    assert gbk.metadata["source"].endswith("gbk.txt") and gbk.metadata["title"] == "gbk"


def test_markdown_title(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text("# 运维手册\n\n每周检查设备。\n", encoding="utf-8")
    section = load_file(tmp_path / "guide.md")[0]
    assert section.metadata["title"] == "运维手册" and "每周检查设备" in section.text


def test_html_drops_scripts(tmp_path: Path) -> None:
    html = (
        "<html><head><title>Policy</title><script>var x=1;</script></head>"
        "<body><h1>Rules</h1><p>Keep keys safe.</p></body></html>"
    )
    (tmp_path / "p.html").write_text(html)
    sections = load_file(tmp_path / "p.html")
    assert sections[-1].metadata["title"] == "Policy" and sections[-1].metadata["heading"] == "Rules"
    text = "\n".join(s.text for s in sections)
    assert "Keep keys safe." in sections[-1].text and "var x" not in text


def test_pdf_pages(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Manual")
    for text in ("First page about pumps.", "Second page about valves."):
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        pdf.cell(text=text)
    pdf.output(str(tmp_path / "manual.pdf"))
    sections = load_file(tmp_path / "manual.pdf")
    assert [s.metadata["page"] for s in sections] == [1, 2]
    assert "pumps" in sections[0].text and "valves" in sections[1].text
    assert sections[0].metadata["title"] == "Manual"


def test_corrupt_pdf_is_a_clear_error() -> None:
    with pytest.raises(LoadError, match=r"broken\.pdf"):
        load_bytes("broken.pdf", b"%PDF-1.4 this is not really a pdf")


def test_docx_paragraphs_and_tables(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = "Handbook"
    document.add_paragraph("员工须知：请保护客户隐私。")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "部门", "风控"
    document.save(str(tmp_path / "h.docx"))
    section = load_file(tmp_path / "h.docx")[0]
    assert section.metadata["title"] == "Handbook"
    assert "保护客户隐私" in section.text and "部门 | 风控" in section.text


def test_csv_rows(tmp_path: Path) -> None:
    (tmp_path / "parts.csv").write_text("part,stock\npump,4\nvalve,9\n")
    sections = load_file(tmp_path / "parts.csv")
    assert [s.metadata["row"] for s in sections] == [1, 2]
    assert sections[1].text == "part: valve; stock: 9"


def test_json_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "faq.json").write_text(
        json.dumps([{"q": "营业时间？", "a": "九点到五点"}, {"q": "x", "a": "y"}], ensure_ascii=False)
    )
    sections = load_file(tmp_path / "faq.json")
    assert len(sections) == 2 and "营业时间" in sections[0].text and sections[1].metadata["row"] == 2
    (tmp_path / "log.jsonl").write_text('{"event": "start"}\n\n{"event": "stop", "meta": {"code": 3}}\n')
    lines = load_file(tmp_path / "log.jsonl")
    assert [s.metadata["row"] for s in lines] == [1, 3] and "meta.code: 3" in lines[1].text
    with pytest.raises(LoadError):
        load_bytes("bad.json", b"{nope")


def test_xlsx_and_pptx(tmp_path: Path) -> None:
    from openpyxl import Workbook
    from pptx import Presentation

    wb = Workbook()
    wb.active.append(["name", "role"])
    wb.active.append(["Li", "engineer"])
    wb.save(str(tmp_path / "staff.xlsx"))
    assert load_file(tmp_path / "staff.xlsx")[0].text == "name: Li; role: engineer"
    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Quarterly review"
    deck.save(str(tmp_path / "q.pptx"))
    assert load_file(tmp_path / "q.pptx")[0].metadata["slide"] == 1


def test_epub_chapters(tmp_path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("manual-1")
    book.set_title("Pump manual")
    book.set_language("zh")
    chapters = []
    bodies = ["<h1>安装</h1><p>先检查阀门。</p>", "<h1>Maintenance</h1><p>Every 500 hours.</p>"]
    for i, body in enumerate(bodies):
        chapter = epub.EpubHtml(title=f"c{i}", file_name=f"c{i}.xhtml", lang="zh")
        chapter.content = f"<html><body>{body}</body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc = chapters
    book.spine = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(tmp_path / "manual.epub"), book)
    sections = load_file(tmp_path / "manual.epub")
    texts = [s.text for s in sections]
    assert any("先检查阀门" in t for t in texts) and any("Every 500 hours." in t for t in texts)
    assert sections[0].metadata["title"] == "Pump manual" and "chapter" in sections[0].metadata
    with pytest.raises(LoadError, match="EPUB"):
        load_bytes("broken.epub", b"PK not a zip")


def test_unsupported_type() -> None:
    with pytest.raises(UnsupportedFormat, match=r"\.exe"):
        load_bytes("tool.exe", b"MZ")
