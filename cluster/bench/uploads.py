"""bench-knowledge's large uploads, each while the latency probe sends chats and searches (p95 against idle):

- one 50 MB PDF through the upload API with `wait=false`, followed by GET on its job until it ends (a few
  hundred pages of text; the rest of its size is scanned-page images, which carry no text);
- a folder of 10,000 small files through `raychat kb ingest`.

Both are made here from a fixed seed, so every run ingests the same bytes.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from cluster import credentials
from cluster.bench.probe import LatencyProbe, p95
from cluster.settings import RaychatSettings

# Words of the synthetic documents (bench-knowledge adds Chinese ones for its store benchmark).
LATIN = (
    "pump valve boiler turbine bearing sensor pressure maintenance inspection schedule oil filter motor "
    "gearbox compressor safety record audit customer account loan policy risk report ledger the of and "
    "every week month after before check replace clean measure limit"
).split()


def log(message: str) -> None:
    print(f"[bench-knowledge] {message}", flush=True)


def make_pdf(path: Path, megabytes: float, pages: int, seed: int = 11) -> int:
    """A PDF of `pages` pages of text, padded to about `megabytes` MB with noise images (scanned pages
    that carry no text). Returns its size."""
    from fpdf import FPDF
    from PIL import Image

    rng = random.Random(seed)
    pdf = FPDF()
    pdf.set_font("helvetica", size=9)
    for _ in range(pages):
        pdf.add_page()
        for _ in range(45):
            pdf.cell(text=" ".join(rng.choice(LATIN) for _ in range(16)), new_x="LMARGIN", new_y="NEXT")
    text_bytes = pages * 4000  # a compressed page of text, about
    image_bytes = 1e6
    images = max(round((megabytes * 1e6 - text_bytes) / image_bytes), 0)
    side = int((image_bytes / 3) ** 0.5)
    noise = random.Random(seed).randbytes
    for _ in range(images):
        pdf.add_page()
        pdf.image(Image.frombytes("RGB", (side, side), noise(side * side * 3)), w=180)
    path.write_bytes(bytes(pdf.output()))
    return path.stat().st_size


def make_small_files(folder: Path, count: int, seed: int = 13) -> None:
    rng = random.Random(seed)
    shutil.rmtree(folder, ignore_errors=True)
    for i in range(count):
        sub = folder / f"part{i // 1000:02d}"  # a thousand a folder, as real trees spread them
        sub.mkdir(parents=True, exist_ok=True)
        words = " ".join(rng.choice(LATIN) for _ in range(rng.randint(20, 60)))
        (sub / f"note{i:05d}.txt").write_text(f"Note {i}. {words}.")


def upload_job(
    url: str, settings: RaychatSettings, kb: str, path: Path, poll_s: float = 1.0
) -> dict[str, Any]:
    """One file uploaded with wait=false; its job followed until it ends. The job's record, with the time
    the upload request took (it answers before ingestion)."""
    headers = credentials.auth_headers(settings)
    with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
        http.post("/v1/knowledge_bases", json={"name": kb}).raise_for_status()
        started = time.perf_counter()
        with path.open("rb") as fh:
            resp = http.post(
                f"/v1/knowledge_bases/{kb}/documents",
                params={"wait": "false"},
                files=[("files", (path.name, fh, "application/pdf"))],
            )
        if resp.status_code != 202:
            raise RuntimeError(f"upload refused: {resp.status_code} {resp.text[:300]}")
        answered = time.perf_counter() - started
        location = resp.headers["Location"]
        job = resp.json()
        while job["status"] == "running":
            time.sleep(poll_s)
            job = http.get(location).raise_for_status().json()
            log(f"  job {job['status']}: {job['chunks']} chunks ({job['chunks_per_s']:.1f}/s)")
        elapsed = round(time.perf_counter() - started, 1)
        for result in job.get("results") or []:
            if result.get("status") == "failed":
                log(f"  {result.get('document')}: failed: {result.get('error')}")
        return job | {"upload_answered_s": round(answered, 2), "seconds": elapsed}


def run(
    url: str, settings: RaychatSettings, scratch: Path, probe: LatencyProbe, pdf_mb: float, small_files: int
) -> list[dict[str, Any]]:
    from cluster import kb

    out: list[dict[str, Any]] = []
    scratch.mkdir(parents=True, exist_ok=True)
    if pdf_mb > 0:
        pdf = scratch / "large.pdf"
        size = make_pdf(pdf, pdf_mb, pages=300)
        log(f"a {size / 1e6:.1f} MB PDF through the upload API (wait=false), chats and searches meanwhile")
        probe.start()
        job = upload_job(url, settings, f"bench_pdf_{int(time.time())}", pdf)
        out.append(
            {
                "what": f"one {size / 1e6:.0f} MB PDF, upload API (wait=false)",
                "files": 1,
                "chunks": job["chunks"],
                "seconds": job["seconds"],
                "chunks_per_s": round(job["chunks"] / max(job["seconds"], 1e-9), 1),
                "failed": job["failed"],
                "upload_answered_s": job["upload_answered_s"],
                "during": p95(probe.stop()),
            }
        )
        pdf.unlink()
    if small_files > 0:
        folder = scratch / "small-files"
        make_small_files(folder, small_files)
        log(f"{small_files} small files through raychat kb ingest, chats and searches meanwhile")
        probe.start()
        started = time.perf_counter()
        summary = kb.ingest_paths(settings, f"bench_files_{int(time.time())}", [str(folder)])
        elapsed = time.perf_counter() - started
        out.append(
            {
                "what": f"{small_files} small files, raychat kb ingest",
                "files": small_files,
                "chunks": summary["chunks"],
                "seconds": round(elapsed, 1),
                "chunks_per_s": round(summary["chunks"] / elapsed, 1),
                "failed": summary["failed"],
                "during": p95(probe.stop()),
            }
        )
        shutil.rmtree(folder, ignore_errors=True)
    return out


def rows(idle: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """The report's table: chat and search p95 idle, then during each large upload."""
    requests = idle["chat_requests"] + idle["search_requests"]
    failed = idle["chat_failed"] + idle["search_failed"]
    lines = [
        "| while | chunks | seconds | chunks/s | chat p95 s | search p95 s | requests | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| idle | | | | {idle['chat_p95_s']} | {idle['search_p95_s']} | {requests} | {failed} |",
    ]
    for r in runs:
        d = r["during"]
        lines.append(
            f"| {r['what']} | {r['chunks']} | {r['seconds']} | {r['chunks_per_s']} | {d['chat_p95_s']} | "
            f"{d['search_p95_s']} | {d['chat_requests'] + d['search_requests']} | "
            f"{d['chat_failed'] + d['search_failed']} |"
        )
    return lines
