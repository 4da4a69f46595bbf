"""File -> text sections with metadata, one loader per format.

Each loader returns `Section`s: a piece of text and where it came from (source path, title, and the page,
row or slide where that applies). Formats with headings give one section per heading, its path in
`heading` ("Install > On Debian"; `headings.py`), so that no chunk straddles two sections. Text files
have their encoding detected (UTF-8 first, then charset-normalizer, which recognises GBK/GB18030 Chinese
text). A file that cannot be read raises
`LoadError` with a message naming the file and the reason; it never yields partial garbage.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowledge.headings import marked, split_by_headings

# Text formats whose titles are written in the text (Markdown, AsciiDoc, reStructuredText).
TITLED_TEXT = frozenset({".md", ".markdown", ".txt", ".rst", ".adoc", ".asciidoc"})
MARKDOWN = frozenset({".md", ".markdown"})
_HTML_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


class LoadError(ValueError):
    """The file cannot be turned into text; the message says why."""


class UnsupportedFormat(LoadError):
    """No loader handles this file type."""


@dataclass
class Section:
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def decode_text(data: bytes) -> tuple[str, str]:
    """Bytes -> (text, encoding). UTF-8 (with or without BOM) first, then detection."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise LoadError("cannot detect the text encoding")
    encoding = best.encoding
    # charset-normalizer may name a subset (gb2312) of what the text uses; gb18030 is its superset.
    if encoding.lower() in {"gb2312", "gbk", "hz"}:
        encoding = "gb18030"
    return data.decode(encoding), encoding


def _base_meta(path: Path, source: str | None) -> dict[str, Any]:
    return {"source": source or str(path), "title": path.stem, "format": path.suffix.lower().lstrip(".")}


def load_text(path: Path, data: bytes, source: str | None) -> list[Section]:
    text, encoding = decode_text(data)
    meta = _base_meta(path, source) | {"encoding": encoding}
    suffix = path.suffix.lower()
    if suffix in MARKDOWN:
        for line in text.splitlines():
            if line.startswith("# "):
                meta["title"] = line[2:].strip()
                break
    if suffix not in TITLED_TEXT:
        return [Section(text, meta)]
    return by_heading(text, meta, plain_titles=True, asciidoc_blocks=suffix not in MARKDOWN)


def by_heading(text: str, meta: dict[str, Any], **how: bool) -> list[Section]:
    """One section per heading of `text`, each with its heading path (none before the first)."""
    return [
        Section(part.text, meta | ({"heading": " > ".join(part.headings)} if part.headings else {}))
        for part in split_by_headings(text, **how)
    ]


def _html_text(markup: str | bytes) -> tuple[Any, str]:
    """The soup and its visible text, one line per block, headings marked for `by_heading`."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    for tag in soup.find_all(_HTML_HEADINGS):
        tag.replace_with(marked(int(tag.name[1]), tag.get_text(" ")))
    lines = [line.strip() for line in soup.get_text("\n").split("\n")]
    return soup, "\n".join(line for line in lines if line)


def load_html(path: Path, data: bytes, source: str | None) -> list[Section]:
    markup, encoding = decode_text(data)
    soup, text = _html_text(markup)
    meta = _base_meta(path, source) | {"encoding": encoding}
    if soup.title and soup.title.string:
        meta["title"] = soup.title.string.strip()
    return by_heading(text, meta, plain_titles=False)


def load_pdf(path: Path, data: bytes, source: str | None) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"not a readable PDF: {exc}") from exc
    meta = _base_meta(path, source)
    info = reader.metadata
    if info is not None and info.title:
        meta["title"] = str(info.title)
    sections = [Section(text, meta | {"page": i + 1}) for i, text in enumerate(pages) if text.strip()]
    if not sections and pages:
        raise LoadError("the PDF has no extractable text (scanned images need OCR)")
    return sections


def load_docx(path: Path, data: bytes, source: str | None) -> list[Section]:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises several unrelated types for a damaged file
        raise LoadError(f"not a readable DOCX: {exc}") from exc
    meta = _base_meta(path, source)
    if document.core_properties.title:
        meta["title"] = document.core_properties.title
    parts = [_docx_paragraph(p) for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text.strip() for cell in row.cells))
    return by_heading("\n".join(parts), meta, plain_titles=False)


def _docx_paragraph(paragraph: Any) -> str:
    """A paragraph's text; a 'Heading N' (or 'Title') styled one marked as a title of level N."""
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style == "Title":
        return marked(1, paragraph.text)
    if style.startswith("Heading ") and style[8:].isdigit():
        return marked(int(style[8:]), paragraph.text)
    return str(paragraph.text)


def load_csv(path: Path, data: bytes, source: str | None) -> list[Section]:
    text, encoding = decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    meta = _base_meta(path, source) | {"encoding": encoding}
    sections = []
    for row_number, row in enumerate(reader, start=1):
        line = "; ".join(f"{k}: {v}" for k, v in row.items() if k is not None and v not in (None, ""))
        if line:
            sections.append(Section(line, meta | {"row": row_number}))
    return sections


def _flatten(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        out: list[str] = []
        for key, item in value.items():
            out += _flatten(
                item, f"{prefix}{key}." if not isinstance(item, (str, int, float, bool)) else f"{prefix}{key}"
            )
        return out
    if isinstance(value, list):
        out = []
        for item in value:
            out += _flatten(item, prefix)
        return out
    if value is None:
        return []
    return [f"{prefix.rstrip('.')}: {value}" if prefix else str(value)]


def load_json(path: Path, data: bytes, source: str | None) -> list[Section]:
    text, _ = decode_text(data)
    meta = _base_meta(path, source)
    if path.suffix.lower() == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise LoadError(f"line {number} is not JSON: {exc.msg}") from exc
    else:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoadError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from exc
        items = parsed if isinstance(parsed, list) else [parsed]
        records = list(enumerate(items, start=1))
    return [Section("\n".join(_flatten(rec)), meta | {"row": n}) for n, rec in records if _flatten(rec)]


def load_xlsx(path: Path, data: bytes, source: str | None) -> list[Section]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise LoadError(f"not a readable XLSX: {exc}") from exc
    sections = []
    for sheet in workbook.worksheets:
        rows = sheet.iter_rows(values_only=True)
        header = [str(h) if h is not None else "" for h in next(rows, ())]
        for number, row in enumerate(rows, start=2):
            line = "; ".join(f"{h}: {v}" for h, v in zip(header, row, strict=False) if v is not None)
            if line:
                sections.append(
                    Section(line, _base_meta(path, source) | {"sheet": sheet.title, "row": number})
                )
    return sections


def load_pptx(path: Path, data: bytes, source: str | None) -> list[Section]:
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(data))
    except Exception as exc:
        raise LoadError(f"not a readable PPTX: {exc}") from exc
    sections = []
    for number, slide in enumerate(deck.slides, start=1):
        texts = [
            shape.text_frame.text for shape in slide.shapes if shape.has_text_frame and shape.text_frame.text
        ]
        if texts:
            sections.append(Section("\n".join(texts), _base_meta(path, source) | {"slide": number}))
    return sections


def load_epub(path: Path, data: bytes, source: str | None) -> list[Section]:
    """One section per chapter (spine document) of an EPUB, its text taken from the XHTML."""
    import ebooklib
    from ebooklib import epub

    # Read from memory (ebooklib hands a file object to zipfile): an upload is never written to disk.
    try:
        book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except Exception as exc:
        raise LoadError(f"not a readable EPUB: {exc}") from exc
    titles = book.get_metadata("DC", "title")
    meta = _base_meta(path, source) | ({"title": titles[0][0]} if titles else {})
    sections = []
    for number, item in enumerate(book.get_items_of_type(ebooklib.ITEM_DOCUMENT), start=1):
        _, text = _html_text(item.get_content())
        sections += by_heading(text, meta | {"chapter": number}, plain_titles=False)
    return sections


LOADERS: dict[str, Callable[[Path, bytes, str | None], list[Section]]] = {
    ".txt": load_text,
    ".md": load_text,
    ".markdown": load_text,
    ".rst": load_text,
    ".adoc": load_text,
    ".asciidoc": load_text,
    ".log": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".csv": load_csv,
    ".tsv": load_csv,
    ".json": load_json,
    ".jsonl": load_json,
    ".xlsx": load_xlsx,
    ".pptx": load_pptx,
    ".epub": load_epub,
}


def supported(path: str | Path) -> bool:
    return Path(path).suffix.lower() in LOADERS


def load_bytes(name: str, data: bytes, source: str | None = None) -> list[Section]:
    """Load an uploaded or read file by its name's extension."""
    path = Path(name)
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise UnsupportedFormat(
            f"{path.name}: unsupported file type {path.suffix or '(none)'}; supported: "
            + ", ".join(sorted(LOADERS))
        )
    try:
        return loader(path, data, source)
    except LoadError as exc:
        raise type(exc)(f"{path.name}: {exc}") from exc


def load_file(path: str | Path) -> list[Section]:
    path = Path(path)
    return load_bytes(path.name, path.read_bytes(), str(path))
