"""bench-knowledge's large-upload inputs: the PDF reaches its size and carries its text; the small files."""

from __future__ import annotations

from pathlib import Path

from cluster.bench.uploads import make_pdf, make_small_files, rows
from knowledge.config import KnowledgeSettings
from knowledge.ingest import prepare


def test_the_pdf_reaches_its_size_with_text_on_its_text_pages(tmp_path: Path) -> None:
    path = tmp_path / "large.pdf"
    size = make_pdf(path, megabytes=6, pages=4)
    assert 5e6 < size < 8e6
    doc = prepare("large.pdf", path.read_bytes(), KnowledgeSettings())
    assert len(doc.texts) >= 4 and {m["page"] for m in doc.metadata} == {1, 2, 3, 4}


def test_small_files_are_spread_over_folders_and_the_same_every_run(tmp_path: Path) -> None:
    make_small_files(tmp_path / "a", 2500)
    make_small_files(tmp_path / "b", 2500)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.txt"))
    assert len(files) == 2500 and len({f.parent for f in files}) == 3
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files[::97])


def test_rows_put_idle_first() -> None:
    window = {"chat_p95_s": 0.5, "search_p95_s": 0.1, "chat_requests": 3, "search_requests": 3}
    window |= {"chat_failed": 0, "search_failed": 1}
    run = {"what": "x", "chunks": 10, "seconds": 2.0, "chunks_per_s": 5.0, "during": window}
    table = rows(window, [run])
    assert table[2].startswith("| idle |") and table[3].startswith(
        "| x | 10 | 2.0 | 5.0 | 0.5 | 0.1 | 6 | 1 |"
    )
