"""`make bench-knowledge`: ingestion, embeddings and retrieval, side by side in one run.

1. Ingestion through the running stack (`raychat kb ingest`'s path: `deployments.ingestion`'s overlapping
   parse, embed and write stages): chunks/s, against the same chunks embedded in-process (ratio).
2. `/v1/embeddings` through nginx against sentence-transformers in-process on the same texts: ratio.
3. LanceDB query latency p50/p95 at 10k and 100k chunks for vector, fulltext and hybrid search, and the
   recall@5 of the vector index against exact search, with the search options from settings. Vectors are
   clustered like real embeddings (points scattered around 1 centre per 50 chunks; queries drawn the same
   way), text is drawn from a fixed vocabulary: embedding 100k real chunks would take this 2-core host
   most of an hour. Uniformly random 384-d vectors would be the wrong model: all their distances are
   nearly equal, so "the 5 nearest" is noise that no ANN index (nor a real corpus) reproduces.
Writes knowledge.md, knowledge.json and knowledge.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from cluster import credentials
from cluster.bench import uploads
from cluster.bench.load import pct_of
from cluster.bench.probe import LatencyProbe, p95
from cluster.bench.stack import running_stack
from cluster.bench.uploads import LATIN, log
from cluster.settings import RaychatSettings, load_settings
from knowledge.config import SEARCH_MODES, KnowledgeSettings
from knowledge.store import ChunkRecord, KnowledgeStore

WORDS = (
    LATIN
    + "泵 阀门 锅炉 汽轮机 轴承 传感器 压力 维护 检查 计划 安全 记录 审计 客户 账户 贷款 风险 报告".split()
)


def synthetic_text(rng: random.Random, n: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def clustered(rows: int, centres: np.ndarray, rng: np.random.Generator, spread: float = 0.6) -> np.ndarray:
    v = centres[rng.integers(len(centres), size=rows)] + spread * rng.standard_normal(
        (rows, centres.shape[1])
    ).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def bench_store(
    root: Path, rows: int, dim: int, queries: int, settings: KnowledgeSettings, seed: int = 7
) -> dict[str, Any]:
    shutil.rmtree(root, ignore_errors=True)
    search = settings.vector_search()
    store = KnowledgeStore.from_settings(root, dim, settings, vector_index_min_rows=50000, search=search)
    store.create_kb("bench")
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    centres = nprng.standard_normal((max(rows // 50, 1), dim)).astype("float32")
    vectors = clustered(rows, centres, nprng)
    per_doc = 50
    log(f"store {rows} chunks: writing")
    start = time.perf_counter()
    for d in range(rows // per_doc):
        chunk_vectors = vectors[d * per_doc : (d + 1) * per_doc]
        records = [ChunkRecord(i, synthetic_text(rng), v.tolist()) for i, v in enumerate(chunk_vectors)]
        store.replace_document("bench", f"doc{d}", f"h{d}", records, source=f"doc{d}.txt")
    write_s = time.perf_counter() - start
    store.compact("bench")
    start = time.perf_counter()
    store.build_indexes("bench")
    index_s = time.perf_counter() - start
    indexed = rows >= store.vector_index_min_rows
    latencies: dict[str, list[float]] = {mode: [] for mode in SEARCH_MODES}
    recalls = []
    for q in range(queries):
        qvec = clustered(1, centres, nprng)[0]
        qtext = " ".join(rng.choice(WORDS) for _ in range(3))
        for mode in latencies:
            t = time.perf_counter()
            hits = store.search("bench", query=qtext, vector=qvec.tolist(), mode=mode, top_k=5)  # type: ignore[arg-type]
            latencies[mode].append(time.perf_counter() - t)
            if mode == "vector" and q < 100:
                exact = np.argsort(-(vectors @ qvec))[:5]
                truth = {(f"doc{i // per_doc}", int(i % per_doc)) for i in exact}
                recalls.append(len(truth & {(h.document, h.chunk) for h in hits}) / 5)
    shutil.rmtree(root, ignore_errors=True)
    return {
        "rows": rows,
        "vector_index": f"{search.index_type} ef={search.ef} nprobes={search.nprobes}"
        if indexed
        else "none (exact scan)",
        "write_chunks_per_s": round(rows / write_s, 1),
        "index_build_s": round(index_s, 2),
        "recall_at_5": round(statistics.fmean(recalls), 3),
        **{f"{mode}_p50_ms": round(pct_of(v, 50) * 1000, 2) for mode, v in latencies.items()},
        **{f"{mode}_p95_ms": round(pct_of(v, 95) * 1000, 2) for mode, v in latencies.items()},
    }


def bench_embeddings(
    url: str, settings: RaychatSettings, texts: list[str], batch: int, concurrency: int
) -> dict[str, Any]:
    from knowledge.embedder import Embedder

    async def via_api() -> float:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(headers=credentials.auth_headers(settings), timeout=300) as client:

            async def one(chunk: list[str]) -> None:
                async with sem:
                    resp = await client.post(f"{url}/v1/embeddings", json={"input": chunk})
                    resp.raise_for_status()

            await one(texts[:batch])  # warm-up
            start = time.perf_counter()
            await asyncio.gather(*(one(texts[i : i + batch]) for i in range(0, len(texts), batch)))
            return time.perf_counter() - start

    api_s = asyncio.run(via_api())
    embedder = Embedder.from_settings(settings.knowledge)
    embedder.embed(texts[:batch])
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed(texts[i : i + batch])
    local_s = time.perf_counter() - start
    return {
        "texts": len(texts),
        "request_batch": batch,
        "concurrency": concurrency,
        "api_texts_per_s": round(len(texts) / api_s, 1),
        "in_process_texts_per_s": round(len(texts) / local_s, 1),
        "ratio": round(local_s / api_s, 2),
    }


def bench_ingestion(
    url: str, settings: RaychatSettings, folder: Path, docs: int, probe: LatencyProbe
) -> dict[str, Any]:
    """`raychat kb ingest` of a folder through the stack, then the same chunks embedded in-process by
    the same model with the Embedding deployment's thread count: the pipeline's share of its ceiling.
    Chat and search p95 are probed during the ingestion."""
    from cluster import kb
    from knowledge.embedder import Embedder
    from knowledge.ingest import prepare

    rng = random.Random(3)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for d in range(docs):
        paragraphs = ["。".join(synthetic_text(rng, 25) for _ in range(6)) for _ in range(8)]
        (folder / f"doc{d}.txt").write_text("\n\n".join(paragraphs))
    name = f"bench_ingest_{int(time.time())}"
    probe.start()
    start = time.perf_counter()
    summary = kb.ingest_paths(settings, name, [str(folder)])
    elapsed = time.perf_counter() - start
    during = p95(probe.stop())
    knowledge = settings.knowledge
    texts = [t for p in sorted(folder.iterdir()) for t in prepare(p.name, p.read_bytes(), knowledge).texts]
    shutil.rmtree(folder, ignore_errors=True)
    embedder = Embedder.from_settings(knowledge)
    embedder.embed(texts[:32])  # warm-up
    local_start = time.perf_counter()
    embedder.embed(texts)
    local_s = time.perf_counter() - local_start
    chunks_per_s = summary["chunks"] / elapsed
    in_process = len(texts) / local_s
    return {
        "files": docs,
        "chunks": summary["chunks"],
        "seconds": round(elapsed, 1),
        "chunks_per_s": round(chunks_per_s, 1),
        "in_process_texts_per_s": round(in_process, 1),
        "ratio": round(chunks_per_s / in_process, 2),
        "failed": summary["failed"],
        "during": during,
        "first_embed_s": summary.get("first_embed_s"),
        "embed_busy_s": summary.get("embed_busy_s"),
        "write_busy_s": summary.get("write_busy_s"),
        "kb": name,
    }


def render(out: Path, results: dict[str, Any]) -> str:
    ing, emb, stores = results["ingestion"], results["embeddings"], results["store"]
    lines = [
        "# Knowledge benchmark",
        "",
        f"{results['date']}, {results['cpus']} CPUs. Command: `make bench-knowledge`.",
        "",
        "## Ingestion through the stack against in-process embedding of the same chunks",
        "",
        "| files | chunks | seconds | chunks/s | in-process texts/s | ingestion / in-process |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {ing['files']} | {ing['chunks']} | {ing['seconds']} | {ing['chunks_per_s']} | "
        f"{ing['in_process_texts_per_s']} | {ing['ratio']}x |",
        "",
        "## Chat and search while uploads ingest",
        "",
        "The probe sends a knowledge-base search and a short chat one after another through the service, "
        "idle and then during each ingestion (`cluster/bench/probe.py`, `cluster/bench/uploads.py`).",
        "",
        *uploads.rows(
            results["idle"],
            [{"what": f"{ing['files']} documents, raychat kb ingest (above)", **ing}, *results["uploads"]],
        ),
        "",
        "## Embeddings: `/v1/embeddings` through nginx vs sentence-transformers in-process",
        "",
        "| texts | batch | concurrency | API texts/s | in-process texts/s | API / in-process |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {emb['texts']} | {emb['request_batch']} | {emb['concurrency']} | {emb['api_texts_per_s']} | "
        f"{emb['in_process_texts_per_s']} | {emb['ratio']}x |",
        "",
        "## Retrieval on LanceDB (top 5)",
        "",
        "| chunks | vector index | vector p50/p95 ms | fulltext p50/p95 ms | hybrid p50/p95 ms | recall@5 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for s in stores:
        lines.append(
            f"| {s['rows']} | {s['vector_index']} | {s['vector_p50_ms']} / {s['vector_p95_ms']} | "
            f"{s['fulltext_p50_ms']} / {s['fulltext_p95_ms']} | "
            f"{s['hybrid_p50_ms']} / {s['hybrid_p95_ms']} | "
            f"{s['recall_at_5']} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "knowledge.md").write_text(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    modes = list(SEARCH_MODES)
    for i, s in enumerate(stores):
        ax.bar(
            [m + i * 0.38 for m in range(3)],
            [s[f"{m}_p50_ms"] for m in modes],
            0.38,
            label=f"{s['rows']} chunks",
        )
    ax.set_xticks([m + 0.19 for m in range(3)], modes)
    ax.set_ylabel("query p50 (ms)")
    ax.set_title("LanceDB retrieval latency, top 5")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "knowledge.png", dpi=110)
    plt.close(fig)
    return table


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raychat bench knowledge", description=__doc__)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10000, 100000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--docs", type=int, default=60, help="files for the ingestion run")
    parser.add_argument("--texts", type=int, default=2048, help="texts for the embeddings comparison")
    parser.add_argument("--pdf-mb", type=float, default=50, help="the large PDF's size (0: none)")
    parser.add_argument("--small-files", type=int, default=10000, help="the folder of small files (0: none)")
    parser.add_argument("--idle-s", type=float, default=20, help="the probe's idle window")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    scratch = settings.data_dir / "bench"
    with running_stack(settings) as url, LatencyProbe(url, settings) as probe:
        log(f"chat and search, idle for {args.idle_s:g}s")
        idle = probe.idle(args.idle_s)
        log("ingestion through the stack")
        ingestion = bench_ingestion(url, settings, scratch / "ingest", args.docs, probe)
        log(f"  {ingestion}")
        large = uploads.run(url, settings, scratch / "uploads", probe, args.pdf_mb, args.small_files)
        log(f"  {large}")
        log("embeddings: API vs in-process")
        rng = random.Random(5)
        embeddings = bench_embeddings(
            url, settings, [synthetic_text(rng, 30) for _ in range(args.texts)], 32, 8
        )
        log(f"  {embeddings}")
    stores = [
        bench_store(scratch / f"store{n}", n, 384, args.queries, settings.knowledge) for n in args.sizes
    ]
    for s in stores:
        log(f"  {s}")
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": __import__("os").cpu_count(),
        "idle": idle,
        "ingestion": ingestion,
        "uploads": large,
        "embeddings": embeddings,
        "store": stores,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "knowledge.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(render(args.out, results))
    return 0
