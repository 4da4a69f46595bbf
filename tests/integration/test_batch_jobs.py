"""Batch jobs against the running test cluster: batch chat on the running LLM deployment (a small job:
`--engine auto` picks it) and on a dedicated engine (Ray Data's vLLM processor), bad rows kept, resume skips
answered rows, retrieval with --knowledge-base, and batch ingestion — run the ways users run them (the
script itself, and `ray job submit`)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import ROOT, TEST_ENV, Stack

PYTHON = sys.executable


def rows(*extra: str) -> str:
    good = [
        {
            "custom_id": "a",
            "body": {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6},
        },
        {
            "custom_id": "b",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 6},
        },
    ]
    return "\n".join([*(json.dumps(r) for r in good), *extra]) + "\n"


def read_output(path: Path) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.setdefault(str(record["custom_id"]), record)
    return out


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return next(json.loads(x) for x in reversed(result.stdout.splitlines()) if x.startswith("{"))


def test_batch_chat_records_bad_rows_and_resumes(stack: Stack, tmp_path: Path) -> None:
    source, answers = tmp_path / "prompts.jsonl", tmp_path / "answers.jsonl"
    bad_json = '{"custom_id": "broken", "body": '
    no_messages = json.dumps({"custom_id": "empty", "body": {"messages": []}})
    source.write_text(rows(bad_json, no_messages))
    job = [PYTHON, "cluster/jobs/batch_chat.py", "--input", str(source), "--output", str(answers)]
    first = summary_of(
        subprocess.run(job, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=900)
    )
    assert first["answered"] == 2 and first["errors"] == 2
    # Two rows: the running deployment answers them, and the summary says why.
    assert first["engine"] == "serve" and "dedicated_min_rows" in str(first["engine_reason"])
    out = read_output(answers)
    assert set(out) == {"a", "b", "line-3", "empty"}
    for cid in ("a", "b"):
        response = out[cid]["response"]
        assert isinstance(response, dict) and response["choices"][0]["message"]["content"]
        assert response["usage"]["completion_tokens"] > 0
    assert "error" in out["line-3"] and "error" in out["empty"]

    again = summary_of(
        subprocess.run(job, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=900)
    )
    assert again["skipped"] == 2 and again["answered"] == 0  # answered rows are not asked again
    assert read_output(answers)["a"] == out["a"]


def test_batch_ingest_then_batch_chat_with_retrieval_via_ray_job_submit(stack: Stack, tmp_path: Path) -> None:
    kb = f"batch_{uuid.uuid4().hex[:6]}"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pumps.txt").write_text("The boiler feed pump must be inspected every 500 hours.")
    (docs / "bad.pdf").write_bytes(b"%PDF-1.4 not really")
    ingest = subprocess.run(
        # Its own embedder (a large ingestion's, sparing the Embedding deployment): searched afterwards
        # through the deployment, so both must make the same vectors.
        [PYTHON, "cluster/jobs/ingest.py", kb, str(docs), "--engine", "dedicated"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = summary_of(ingest)
    assert summary["failed"] == 1 and summary["chunks"] >= 1 and summary["engine"] == "dedicated"

    source, answers = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    question = {"role": "user", "content": "How often is the feed pump inspected?"}
    row = {"custom_id": "q1", "body": {"messages": [question], "max_tokens": 8}}
    source.write_text(json.dumps(row) + "\n")
    dashboard = f"http://127.0.0.1:{TEST_ENV['RAYCHAT_RAY__DASHBOARD_PORT']}"
    ray = str(Path(PYTHON).parent / "ray")
    # The Jobs API wants Ray's token (RAY_AUTH_MODE=token): without it nothing is listed or run.
    refused = subprocess.run(
        [ray, "job", "list", "--address", dashboard],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "Authentication required" in refused.stdout + refused.stderr, (
        refused.stderr[-2000:]
    )
    with_token = {
        **stack.env,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(Path(TEST_ENV["RAYCHAT_DATA_DIR"]) / "secrets" / "ray.token"),
    }
    submit = subprocess.run(
        [
            ray,
            "job",
            "submit",
            "--address",
            dashboard,
            "--working-dir",
            str(ROOT),
            # The job's driver gets the cluster's environment, not this shell's: pass the settings.
            "--runtime-env-json",
            json.dumps({"env_vars": {k: v for k, v in TEST_ENV.items() if k.startswith("RAYCHAT_")}}),
            "--",
            PYTHON,
            "cluster/jobs/batch_chat.py",
            "--input",
            str(source),
            "--output",
            str(answers),
            "--knowledge-base",
            kb,
            # An engine of the job's own, as a large job gets it: its start, its batches, its answers.
            "--engine",
            "dedicated",
        ],
        cwd=ROOT,
        env=with_token,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    record = read_output(answers)["q1"]
    response = record["response"]
    assert isinstance(response, dict)
    assert [s["document"] for s in response["sources"]][:1] == ["pumps.txt"]
    summary = json.loads(next(x for x in reversed(submit.stdout.splitlines()) if x.startswith('{"rows"')))
    assert summary["engine"] == "dedicated" and summary["answered"] == 1
    stack.http.delete(f"{stack.url}/v1/knowledge_bases/{kb}", timeout=30)
