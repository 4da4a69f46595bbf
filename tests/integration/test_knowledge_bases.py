"""Knowledge bases on the real stack: create, upload, search, RAG chat with sources, embeddings, errors,
compaction."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import openai
import pytest

from knowledge.store import KnowledgeStore
from tests.conftest import TEST_ENV, Stack
from tests.integration.identity_helpers import call, make_key

MODEL = "smollm2-135m-instruct"
STORE_DIR = Path(TEST_ENV["RAYCHAT_DATA_DIR"]) / "knowledge"  # the default knowledge.store_dir
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2
COMPACTION_BOUND_S = 60  # compaction runs every 3 s on the test stack (tests/conftest.py)
PUMP = "The P-200 pump must be lubricated every 40 operating hours with ISO VG 68 oil."
VALVE = "安全阀每年必须校验一次，校验记录保存在设备档案中。"


def kb_url(stack: Stack, *parts: str) -> str:
    return "/".join([f"{stack.url}/v1/knowledge_bases", *parts])


@pytest.fixture(scope="module")
def kb(stack: Stack) -> str:
    name = f"plant-{uuid.uuid4().hex[:6]}"
    created = stack.http.post(kb_url(stack), json={"name": name, "description": "plant manuals"}, timeout=60)
    assert created.status_code == 201, created.text
    files = [
        ("files", ("pump.txt", PUMP.encode(), "text/plain")),
        ("files", ("valve.md", f"# 安全阀\n\n{VALVE}".encode(), "text/markdown")),
    ]
    upload = stack.http.post(kb_url(stack, name, "documents"), files=files, timeout=300)
    assert upload.status_code == 200, upload.text
    assert [r["status"] for r in upload.json()["data"]] == ["ingested", "ingested"]
    return name


def test_listed_with_documents(stack: Stack, kb: str) -> None:
    assert kb in [k["name"] for k in stack.http.get(kb_url(stack)).json()["data"]]
    docs = stack.http.get(kb_url(stack, kb, "documents")).json()["data"]
    assert {d["document"] for d in docs} == {"pump.txt", "valve.md"}
    assert all(d["chunks"] >= 1 for d in docs)


@pytest.mark.parametrize("mode", ["vector", "fulltext", "hybrid"])
def test_search_modes_find_the_document(stack: Stack, kb: str, mode: str) -> None:
    resp = stack.http.post(
        kb_url(stack, kb, "search"),
        json={"query": "pump lubricated oil", "top_k": 2, "mode": mode},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    hits = resp.json()["data"]
    assert hits and hits[0]["document"] == "pump.txt"
    assert set(hits[0]) >= {"text", "score", "document", "chunk", "metadata"}


def test_rag_chat_non_stream_names_sources(stack: Stack, kb: str) -> None:
    client = stack.openai_client()
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "How often must the P-200 pump be lubricated?"}],
        max_tokens=24,
        temperature=0,
        extra_body={"knowledge_base": kb, "top_k": 1, "search_mode": "hybrid"},
    )
    sources = reply.model_extra["sources"]
    assert sources[0]["document"] == "pump.txt" and reply.choices[0].message.content


def test_rag_chat_stream_carries_sources_in_first_chunk(stack: Stack, kb: str) -> None:
    client = stack.openai_client()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "安全阀多久校验一次？"}],
        max_tokens=16,
        stream=True,
        extra_body={"knowledge_base": kb, "top_k": 1},
    )
    chunks = list(stream)
    assert chunks[0].model_extra["sources"][0]["document"] == "valve.md"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_embeddings_through_openai_client(stack: Stack) -> None:
    client = stack.openai_client()
    one = client.embeddings.create(model="all-MiniLM-L6-v2", input="hello")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert one.usage.prompt_tokens > 0
    many = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=["pump", "the valve closes under high pressure", "泵需要定期维护"]
    )
    assert [d.index for d in many.data] == [0, 1, 2]
    assert many.usage.prompt_tokens > one.usage.prompt_tokens * 3
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-large", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="all-MiniLM-L6-v2", input=[])


def test_bad_input(stack: Stack, kb: str) -> None:
    assert stack.http.get(kb_url(stack, "no-such-kb", "documents")).status_code == 404
    assert stack.http.post(kb_url(stack, "no-such-kb", "search"), json={"query": "x"}).status_code == 404
    for bad in ("", "a" * 65, "..", "a..b"):
        resp = stack.http.post(kb_url(stack), json={"name": bad})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_name", bad
    assert stack.http.post(kb_url(stack), json={"name": kb}).status_code == 409
    exe = stack.http.post(
        kb_url(stack, kb, "documents"), files=[("files", ("x.exe", b"MZ", "application/octet-stream"))]
    )
    assert exe.status_code == 415 and exe.json()["error"]["code"] == "unsupported_file_type"
    assert (
        stack.http.post(kb_url(stack, kb, "search"), json={"query": "x", "mode": "psychic"}).status_code
        == 400
    )
    assert stack.http.delete(kb_url(stack, kb, "documents", "ghost.txt")).status_code == 404


def test_corrupt_pdf_fails_alone(stack: Stack) -> None:
    from fpdf import FPDF

    name = f"mixed-{uuid.uuid4().hex[:6]}"
    assert stack.http.post(kb_url(stack), json={"name": name}).status_code == 201
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Boiler pressure limit is 12 bar.")
    good = io.BytesIO(bytes(pdf.output()))
    files = [
        ("files", ("broken.pdf", b"%PDF-1.4 garbage", "application/pdf")),
        ("files", ("boiler.pdf", good.getvalue(), "application/pdf")),
        ("files", ("notes.txt", b"Check the boiler daily.", "text/plain")),
    ]
    results = stack.http.post(kb_url(stack, name, "documents"), files=files, timeout=300).json()["data"]
    assert [r["status"] for r in results] == ["failed", "ingested", "ingested"]
    assert "broken.pdf" in results[0]["error"]
    docs = {d["document"] for d in stack.http.get(kb_url(stack, name, "documents")).json()["data"]}
    assert docs == {"boiler.pdf", "notes.txt"}  # consistent: nothing of the broken file
    assert stack.http.delete(kb_url(stack, name)).status_code == 200
    assert stack.http.get(kb_url(stack, name, "documents")).status_code == 404


def _large_pdf(megabytes: int) -> bytes:
    """A PDF of one page of text and `megabytes` of incompressible image: large, quick to ingest."""
    import os

    from fpdf import FPDF
    from PIL import Image

    side = int((megabytes * 1024 * 1024 / 3) ** 0.5) + 1
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="The turbine hall crane is inspected every six months.")
    pdf.image(Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)), w=50)
    return bytes(pdf.output())


def test_a_file_larger_than_a_json_body_uploads_through_both_proxies(stack: Stack) -> None:
    # gateway.max_body_bytes (10 MiB) holds JSON bodies; uploads take gateway.max_upload_bytes (64 MiB).
    name = f"large-{uuid.uuid4().hex[:6]}"
    assert stack.http.post(kb_url(stack), json={"name": name}).status_code == 201
    pdf = _large_pdf(12)
    assert len(pdf) > 12 * 1024 * 1024
    for base in (stack.url, stack.traefik_url):
        resp = stack.http.post(
            f"{base}/v1/knowledge_bases/{name}/documents",
            files=[("files", ("crane.pdf", pdf, "application/pdf"))],
            timeout=300,
        )
        assert resp.status_code == 200, (base, resp.text[:300])
        assert resp.json()["data"][0]["status"] in ("ingested", "unchanged"), base
    # over gateway.max_upload_bytes: refused by the proxies (test_ingress.py)
    assert stack.http.delete(kb_url(stack, name)).status_code == 200


def test_an_upload_job_answers_at_once_and_is_followed_to_its_end(stack: Stack) -> None:
    """`wait=false`: 202 with the job, then GET shows it running or done; a chat answers meanwhile; the
    finished job lists every file's outcome, and the documents are searchable."""
    name = f"job-{uuid.uuid4().hex[:6]}"
    assert stack.http.post(kb_url(stack), json={"name": name}).status_code == 201
    notes = [
        ("files", (f"note{i}.txt", f"Turbine {i + 10} is inspected in week {i + 10}.".encode(), "text/plain"))
        for i in range(12)
    ]
    files = [*notes, ("files", ("broken.pdf", b"%PDF-1.4 garbage", "application/pdf"))]
    started = stack.http.post(
        kb_url(stack, name, "documents"), params={"wait": "false"}, files=files, timeout=60
    )
    assert started.status_code == 202, started.text
    job = started.json()
    assert (
        job["object"] == "knowledge_base.ingestion_job" and job["status"] == "running" and job["files"] == 13
    )
    assert started.headers["location"] == f"/v1/knowledge_bases/{name}/jobs/{job['id']}"
    chat = stack.http.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4},
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    seen = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = stack.http.get(f"{stack.url}{started.headers['location']}", timeout=30)
        assert state.status_code == 200, state.text
        seen.append(state.json())
        if seen[-1]["status"] != "running":
            break
        time.sleep(1)
    final = seen[-1]
    assert final["status"] == "completed", final
    assert (final["done"], final["ingested"], final["failed"]) == (13, 12, 1)
    assert final["chunks"] == 12 and final["finished_at"] >= final["created_at"]
    assert [r["status"] for r in final["results"]][-1] == "failed" and "broken.pdf" in final["results"][-1][
        "error"
    ]
    assert all(s["done"] <= 13 for s in seen)
    hits = stack.http.post(
        kb_url(stack, name, "search"), json={"query": "Turbine 17", "mode": "fulltext"}
    ).json()
    # (ICU tokenizing leaves out one-character tokens such as "7": the README's search notes)
    assert hits["data"][0]["document"] == "note7.txt"
    # another editor of the same knowledge base does not see the job: only its starter and admins do
    editor = make_key(stack, "editor", [name])
    other = call(f"{stack.url}{started.headers['location']}", "GET", editor.key)
    assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
    assert stack.http.delete(f"{stack.url}/v1/admin/keys/{editor.id}").status_code == 200
    missing = stack.http.get(kb_url(stack, name, "jobs", "ingest-0123456789abcdef"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    refused = stack.http.post(
        kb_url(stack, name, "documents"), params={"wait": "false"}, files=[("files", ("x.exe", b"MZ"))]
    )
    assert refused.status_code == 415  # checked before any job starts
    assert stack.http.delete(kb_url(stack, name)).status_code == 200


def test_delete_document_hides_it(stack: Stack) -> None:
    name = f"del-{uuid.uuid4().hex[:6]}"
    stack.http.post(kb_url(stack), json={"name": name})
    stack.http.post(
        kb_url(stack, name, "documents"),
        files=[("files", ("gone.txt", b"ephemeral turbine note", "text/plain"))],
        timeout=300,
    )
    assert stack.http.delete(kb_url(stack, name, "documents", "gone.txt")).status_code == 200
    hits = stack.http.post(
        kb_url(stack, name, "search"), json={"query": "turbine", "mode": "fulltext"}
    ).json()["data"]
    assert hits == []


def stored_documents(name: str) -> dict[str, bool]:
    """Every document that still has rows in the knowledge base's table, deleted or not, read from the
    stack's LanceDB directory: the API lists live documents only, and compaction is about the others."""
    store = KnowledgeStore(STORE_DIR, dim=EMBEDDING_DIM)
    return {d["document"]: d["deleted"] for d in store.documents(name, include_deleted=True)}


def test_compaction_removes_deleted_rows(stack: Stack) -> None:
    name = f"compact-{uuid.uuid4().hex[:6]}"
    assert stack.http.post(kb_url(stack), json={"name": name}).status_code == 201
    files = [
        ("files", ("keep.txt", b"kept compressor note", "text/plain")),
        ("files", ("gone.txt", b"deleted compressor note", "text/plain")),
    ]
    assert stack.http.post(kb_url(stack, name, "documents"), files=files, timeout=300).status_code == 200
    assert stored_documents(name) == {"keep.txt": False, "gone.txt": False}
    assert stack.http.delete(kb_url(stack, name, "documents", "gone.txt")).status_code == 200
    # The delete only marks the rows; they leave the table at the next compaction (every 3 s here).
    deadline = time.monotonic() + COMPACTION_BOUND_S
    while "gone.txt" in stored_documents(name) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stored_documents(name) == {"keep.txt": False}
    hits = stack.http.post(
        kb_url(stack, name, "search"), json={"query": "compressor", "mode": "fulltext"}, timeout=60
    ).json()["data"]
    assert [h["document"] for h in hits] == ["keep.txt"]
