"""A batch job's input read in chunks and its output written as rows finish, so that no file is held in
memory whole and an interrupted job loses nothing it answered.

The output file is the job's state: at the start its answered lines are kept (error lines dropped, so those
rows are asked again) and their custom_ids skipped; every new line is appended and flushed as its row
finishes. Lines are in the order rows finish, each naming its custom_id (as OpenAI's batch output is).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cluster.jobs.batch_rows import BadRow, Row, parse_line


def answered_ids_kept(path: Path) -> set[str]:
    """Rewrites `path` with only its answered lines (one per custom_id) and returns their custom_ids. A
    missing file is an empty start. The rewrite streams through a temp file and renames it into place."""
    done: set[str] = set()
    if not path.exists():
        return done
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (
            os.fdopen(fd, "w", encoding="utf-8") as out,
            path.open(encoding="utf-8", errors="replace") as src,
        ):
            for text in src:
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write
                cid = record.get("custom_id") if isinstance(record, dict) else None
                if isinstance(cid, str) and record.get("response") and cid not in done:
                    done.add(cid)
                    out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return done


class OutputWriter:
    """Appends one JSON line per finished row and flushes it: a crash keeps every line written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        os.fsync(self._fh.fileno())
        self._fh.close()


def count_rows(lines: Iterable[str], limit: int | None) -> int:
    """Non-blank lines (at most `limit`): a job's size, known before its engine is chosen."""
    n = 0
    for text in lines:
        if text.strip():
            n += 1
            if limit is not None and n >= limit:
                break
    return n


def read_chunks(
    lines: Iterable[str], *, chunk_rows: int, model_id: str, rag: bool = False, limit: int | None = None
) -> Iterator[list[Row]]:
    """Rows (`parse_line`) in lists of at most `chunk_rows`; a repeated custom_id is an error row. Only the
    ids seen are kept across chunks, never the rows."""
    first_line: dict[str, int] = {}
    chunk: list[Row] = []
    seen = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if limit is not None and seen >= limit:
            break
        seen += 1
        row = parse_line(text, number, model_id=model_id, rag=rag)
        first = first_line.setdefault(row.custom_id, number)
        if first != number:
            row = BadRow(
                number, row.custom_id, f"duplicate custom_id (first on line {first})", "duplicate_custom_id"
            )
        chunk.append(row)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class Tally:
    """A job's counts, and its progress line on stderr (rows/s and output tokens/s) at most once a second."""

    total: int
    label: str = "rows"
    answered: int = 0
    errors: int = 0
    skipped: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    first_answer_s: float | None = None  # a dedicated engine's start shows here
    _shown: float = 0.0

    @property
    def done(self) -> int:
        return self.answered + self.errors + self.skipped

    def add(self, record: Mapping[str, Any]) -> None:
        if "response" in record and record["response"]:
            self.answered += 1
            if self.first_answer_s is None:
                self.first_answer_s = round(time.monotonic() - self.started, 3)
            usage = record["response"].get("usage") or {}
            self.tokens += int(usage.get("completion_tokens") or 0)
        else:
            self.errors += 1
        self.show()

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._shown < 1 and self.done < self.total:
            return
        self._shown = now
        elapsed = max(now - self.started, 1e-6)
        print(
            f"\r  {self.label} [{self.done}/{self.total}] rows, {self.done / elapsed:.2f} rows/s, "
            f"{self.tokens / elapsed:.1f} output tok/s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def summary(self) -> dict[str, Any]:
        """Counts for this run; the rates are over the rows this run processed and its whole wall time."""
        seconds = time.monotonic() - self.started
        processed = self.answered + self.errors
        return {
            "rows": self.total,
            "answered": self.answered,
            "errors": self.errors,
            "skipped": self.skipped,
            "seconds": round(seconds, 3),
            "rows_per_s": round(processed / seconds, 3) if seconds > 0 else 0.0,
            "output_tokens_per_s": round(self.tokens / seconds, 3) if seconds > 0 else 0.0,
            "first_answer_s": self.first_answer_s,
        }
