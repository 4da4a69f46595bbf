"""A batch job's input in chunks, its output appended as rows finish, resume and the summary (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster.jobs import batch_rows, batch_stream
from cluster.jobs.batch_rows import BadRow

MODEL = "smollm2-135m-instruct"


def line(custom_id: str) -> str:
    return json.dumps({"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": "hi"}]}})


def answered(custom_id: str, completion_tokens: int = 3) -> dict[str, Any]:
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": completion_tokens,
        "total_tokens": 5 + completion_tokens,
    }
    return {"custom_id": custom_id, "response": {"object": "chat.completion", "usage": usage}}


def test_chunks_keep_duplicates_apart_across_their_boundaries_and_honour_the_limit() -> None:
    lines = [line("a"), "", line("b"), line("a"), "{oops", line("c")]
    chunks = list(batch_stream.read_chunks(lines, chunk_rows=2, model_id=MODEL))
    assert [len(c) for c in chunks] == [2, 2, 1]
    rows = [row for chunk in chunks for row in chunk]
    assert [(r.custom_id, type(r).__name__) for r in rows] == [
        ("a", "ChatRow"),
        ("b", "ChatRow"),
        ("a", "BadRow"),
        ("line-5", "BadRow"),
        ("c", "ChatRow"),
    ]
    dup = rows[2]
    assert isinstance(dup, BadRow) and dup.code == "duplicate_custom_id" and "line 1" in dup.message
    limited = list(batch_stream.read_chunks(lines, chunk_rows=10, model_id=MODEL, limit=2))
    assert [r.custom_id for r in limited[0]] == ["a", "b"]
    assert batch_stream.count_rows(lines, None) == 5 and batch_stream.count_rows(lines, 2) == 2


def test_resume_keeps_answered_lines_drops_errors_and_torn_lines(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    old = [
        answered("a"),
        batch_rows.error_record("b", "boom", "server_error", "inference_failed"),
        answered("z"),  # not in this input (e.g. beyond --limit): kept
        answered("a"),  # a repeat: the first is kept
    ]
    out.write_text("\n".join(json.dumps(r) for r in old) + "\n{torn line")
    assert batch_stream.answered_ids_kept(out) == {"a", "z"}
    assert [json.loads(t)["custom_id"] for t in out.read_text().splitlines()] == ["a", "z"]
    assert batch_stream.answered_ids_kept(tmp_path / "missing.jsonl") == set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file left


def test_lines_are_appended_as_rows_finish(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.jsonl"
    writer = batch_stream.OutputWriter(out)
    writer.write(answered("c"))
    assert json.loads(out.read_text())["custom_id"] == "c"  # on disk before the job ends
    writer.write(batch_rows.error_record("a", "boom", "server_error", None))
    writer.close()
    assert [json.loads(t)["custom_id"] for t in out.read_text().splitlines()] == ["c", "a"]


def test_summary_counts() -> None:
    tally = batch_stream.Tally(total=5)
    tally.add(answered("a", completion_tokens=10))
    tally.add(answered("b", completion_tokens=30))
    tally.add(batch_rows.error_record("c", "boom", "server_error", "inference_failed"))
    tally.add(batch_rows.error_record("line-4", "bad", "invalid_request_error", "invalid_json"))
    tally.skipped += 1
    tally.started -= 2.0
    summary = tally.summary()
    assert (summary["rows"], summary["answered"], summary["errors"], summary["skipped"]) == (5, 2, 2, 1)
    assert abs(summary["rows_per_s"] - 2.0) < 0.1 and abs(summary["output_tokens_per_s"] - 20.0) < 1
    assert summary["first_answer_s"] is not None and summary["first_answer_s"] >= 0
