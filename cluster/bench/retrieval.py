"""`make bench-retrieval`: retrieval quality on real corpora nobody here wrote, every search mode side by
side: hit@1, hit@5 and MRR@10 for vector, full-text and hybrid search, in English and in Chinese.

The corpora are Debian packages pinned by version and sha256 (`eval/corpora.json`): git's documentation
(English) and the Debian Administrator's Handbook in Simplified Chinese. The questions
(`eval/questions-*.jsonl`) were written by hand against one passage each, its text quoted verbatim as
`answer` (`eval/README.md`).
A hit is correct when it comes from the question's document and holds the answer (or one half of it, when
a chunk boundary cut it). Ingestion is the service's own code in-process (`knowledge.ingest.prepare`, the
settings' embedder and `KnowledgeStore` with the settings' tokenizer and fusion weights), so a change to
splitting, tokenizing or fusion shows here. `--backends torch,onnx,onnx-int8` runs the embedding backends
side by side: the corpus' chunks embedded per second, and what each does to quality. Writes retrieval.md,
retrieval.json and retrieval.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.settings import RaychatSettings, load_settings
from knowledge.config import MULTILINGUAL, SEARCH_MODES, KnowledgeSettings

EVAL = Path(__file__).parent / "eval"
LANGUAGES = ("en", "zh")
DEPTH = 10  # MRR@10: a correct hit below rank 10 counts as none


def log(message: str) -> None:
    print(f"[bench-retrieval] {message}", flush=True)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    document: str
    answer: str


def load_questions(language: str) -> list[Question]:
    lines = (EVAL / f"questions-{language}.jsonl").read_text().splitlines()
    return [Question(**json.loads(line)) for line in lines if line.strip()]


def _squash(text: str) -> str:
    return " ".join(text.split())


def correct(question: Question, document: str, text: str) -> bool:
    """The hit answers the question: its document, and the answer inside it (either half is enough:
    a chunk boundary may cut the quoted passage)."""
    if document != question.document:
        return False
    answer, body = _squash(question.answer), _squash(text)
    half = len(answer) // 2
    return answer in body or answer[:half] in body or answer[half:] in body


def scores(ranks: list[int | None]) -> dict[str, float]:
    """hit@1, hit@5 and MRR@10 from each question's rank of its first correct hit (None: not found)."""
    n = max(len(ranks), 1)
    return {
        "hit@1": round(sum(1 for r in ranks if r == 1) / n, 3),
        "hit@5": round(sum(1 for r in ranks if r is not None and r <= 5) / n, 3),
        "mrr": round(sum(1 / r for r in ranks if r is not None and r <= DEPTH) / n, 3),
    }


# --- corpora ----------------------------------------------------------------------------------------
def fetch_corpus(language: str, cache: Path) -> tuple[Path, list[Path]]:
    """The corpus' files, from its pinned .deb (downloaded with apt once, checked by sha256, kept)."""
    spec = json.loads((EVAL / "corpora.json").read_text())[language]
    debs, tree = cache / "debs", cache / language
    deb = debs / spec["filename"]
    if not deb.exists():
        debs.mkdir(parents=True, exist_ok=True)
        log(f"{language}: apt-get download {spec['package']}={spec['version']}")
        run = subprocess.run(
            ["apt-get", "download", f"{spec['package']}={spec['version']}"],
            cwd=debs,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise SystemExit(
                f"bench-retrieval: cannot download {spec['package']}={spec['version']} "
                f"({run.stderr.strip()[-300:]}); run `apt-get update` first, or fetch it from "
                f"{spec['snapshot']['by_hash']} into {debs}/{spec['filename']}"
            )
        (debs / spec["apt_download_filename"]).replace(deb)
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    if digest != spec["sha256"]:
        raise SystemExit(f"bench-retrieval: {deb} has sha256 {digest}, expected {spec['sha256']}")
    root = tree / spec["root"]
    if not root.is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and _included(p.relative_to(root), spec["include"])
    )
    if len(files) != spec["files"]:
        raise SystemExit(
            f"bench-retrieval: {root} has {len(files)} corpus files, corpora.json says {spec['files']}"
        )
    return root, files


def _included(relative: Path, globs: list[str]) -> bool:
    """A glob's '*' stays within one folder level, as in a shell ('*.txt' is the top level only)."""
    return any(len(relative.parts) == len(Path(g).parts) and relative.match(g) for g in globs)


# --- evaluation -------------------------------------------------------------------------------------
def build_store(
    root: Path, files: list[Path], knowledge: KnowledgeSettings, embedder: Any, store_dir: Path, name: str
) -> tuple[Any, dict[str, Any]]:
    from knowledge.ingest import prepare, write_many
    from knowledge.store import KnowledgeStore

    shutil.rmtree(store_dir, ignore_errors=True)
    store = KnowledgeStore.from_settings(store_dir, embedder.dim, knowledge)
    store.create_kb(name)
    started, chunks, embed_s = time.perf_counter(), 0, 0.0
    batch: list[Any] = []
    for i, path in enumerate(files, start=1):
        doc = prepare(path.relative_to(root).as_posix(), path.read_bytes(), knowledge)
        embed_start = time.perf_counter()
        batch.append((doc, embedder.embed(doc.texts)))
        embed_s += time.perf_counter() - embed_start
        chunks += len(doc.texts)
        if i % 25 == 0 or i == len(files):
            write_many(store, name, batch)
            batch = []
            rate = chunks / (time.perf_counter() - started)
            log(f"  {name}: {i}/{len(files)} files, {chunks} chunks ({rate:.0f} chunks/s)")
    store.build_indexes(name)
    return store, {
        "files": len(files),
        "chunks": chunks,
        "seconds": round(time.perf_counter() - started, 1),
        "embed_texts_per_s": round(chunks / max(embed_s, 1e-9), 1),
    }


def evaluate(
    store: Any, embedder: Any, name: str, questions: list[Question], reranker: Any = None
) -> dict[str, dict[str, float]]:
    """Every mode's ranks of the answering passage; with a reranker (`knowledge.reranker_model`), each
    mode's candidates reordered by it, as the Retriever does."""
    ranks: dict[str, list[int | None]] = {mode: [] for mode in SEARCH_MODES}
    from knowledge import rerank

    for q in questions:
        vector = embedder.embed([q.question])[0]
        for mode in SEARCH_MODES:
            hits = rerank.search(
                store, reranker, name, query=q.question, vector=vector, mode=mode, top_k=DEPTH
            )
            ranks[mode].append(
                next((r for r, h in enumerate(hits, start=1) if correct(q, h.document, h.text)), None)
            )
    return {mode: scores(r) for mode, r in ranks.items()}


def render(out: Path, results: dict[str, Any]) -> str:
    backends = results["backends"]
    first = next(iter(backends))
    lines = [
        "# Retrieval quality and embedding backends",
        "",
        f"{results['date']}, {results['cpus']} CPUs, {results['threads']} embedding threads. Command: "
        f"`make bench-retrieval`. Embedding: {results['embedding']}; full-text tokenizer: "
        f"{results['fts_tokenizer']}; reranker: {results['reranker']}; hybrid weights "
        f"{results['weights']}. Texts/s: the corpus' chunks embedded in-process; ratio against {first}.",
        "",
        "| backend | corpus | questions | chunks | texts/s | ratio | mode | hit@1 | hit@5 | MRR@10 |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for backend, languages in backends.items():
        for language, r in languages.items():
            base = backends[first][language]["embed_texts_per_s"]
            ratio = f"{r['embed_texts_per_s'] / base:.2f}x" if base else "-"
            for mode, sc in r["scores"].items():
                lines.append(
                    f"| {backend} | {r['corpus']} ({language}) | {r['questions']} | {r['chunks']} | "
                    f"{r['embed_texts_per_s']} | {ratio} | {mode} | {sc['hit@1']} | {sc['hit@5']} | "
                    f"{sc['mrr']} |"
                )
    table = "\n".join(lines) + "\n"
    (out / "retrieval.md").write_text(table)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(b, lang) for b, langs in backends.items() for lang in langs]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(groups), 1)
    for i, (backend, language) in enumerate(groups):
        r = backends[backend][language]
        ax.bar(
            [m + i * width for m in range(len(SEARCH_MODES))],
            [r["scores"][mode]["hit@5"] for mode in SEARCH_MODES],
            width,
            label=f"{backend}, {r['corpus']} ({language})",
        )
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(SEARCH_MODES))], list(SEARCH_MODES))
    ax.set_ylim(0, 1)
    ax.set_ylabel("hit@5")
    ax.set_title("Retrieval quality by search mode and embedding backend")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "retrieval.png", dpi=110)
    plt.close(fig)
    return table


def variants(
    knowledge: KnowledgeSettings, models: list[str], backends: list[str]
) -> dict[str, KnowledgeSettings]:
    """Each embedding model with each backend it runs on, labelled for the table. Built by validation, so
    a model brings its own defaults (name, fusion weights) unless the settings set them."""
    out: dict[str, KnowledgeSettings] = {}
    for model in models:
        for backend in backends:
            if model == MULTILINGUAL and backend != "torch":
                continue  # it runs on numpy only
            update = {"embedding_model": model, "embedding_backend": backend}
            fields = knowledge.model_dump(exclude_unset=True) | update
            label = "multilingual (numpy)" if model == MULTILINGUAL else f"{model} ({backend})"
            out[label] = KnowledgeSettings.model_validate(fields)
    return out


def run_backend(
    settings: RaychatSettings, backend: str, knowledge: KnowledgeSettings, languages: list[str], threads: int
) -> dict[str, Any]:
    """Every corpus ingested and asked with one embedding model and backend (`backend`: its label)."""
    from knowledge.embedder import Embedder
    from knowledge.rerank import Reranker

    embedder = Embedder.from_settings(knowledge, threads=threads)
    reranker = Reranker.from_settings(knowledge)
    scratch = settings.data_dir / "bench" / "retrieval"
    specs = json.loads((EVAL / "corpora.json").read_text())
    out: dict[str, Any] = {}
    for language in languages:
        root, files = fetch_corpus(language, settings.data_dir / "bench" / "corpora")
        questions = load_questions(language)
        package = specs[language]["package"]
        log(f"{backend}, {language}: {package}, {len(files)} files, {len(questions)} questions")
        store, built = build_store(root, files, knowledge, embedder, scratch / language, f"eval_{language}")
        out[language] = {
            "corpus": specs[language]["package"],
            "questions": len(questions),
            **built,
            "scores": evaluate(store, embedder, f"eval_{language}", questions, reranker),
        }
        log(f"  {backend}, {language}: {built['embed_texts_per_s']} texts/s, {out[language]['scores']}")
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def main(argv: list[str] | None = None, settings: RaychatSettings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raychat bench retrieval", description=__doc__)
    parser.add_argument("--languages", default=",".join(LANGUAGES), help="en,zh")
    parser.add_argument(
        "--backends",
        default=None,
        help="embedding backends side by side, e.g. torch,onnx,onnx-int8 (default: the settings' one)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="embedding models side by side, e.g. bundled,multilingual (default: the settings' one)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="embedding threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    knowledge = settings.knowledge
    backends = (args.backends or knowledge.embedding_backend).split(",")
    models = (args.models or knowledge.embedding_model).split(",")
    languages = args.languages.split(",")
    runs = variants(knowledge, models, backends)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "embedding": ", ".join(runs),
        "fts_tokenizer": knowledge.fts_tokenizer,
        "reranker": knowledge.reranker_model or "none",
        "weights": {
            label: {k: v.model_dump() for k, v in cfg.hybrid_weights.items()} for label, cfg in runs.items()
        },
        "backends": {
            label: run_backend(settings, label, cfg, languages, args.threads) for label, cfg in runs.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(render(args.out, results))
    return 0
