#!/usr/bin/env python3
"""Check the retrieval evaluation sets against their extracted corpora (stdlib only).

    python3 cluster/bench/eval/verify.py --en /tmp/corpora/en --zh /tmp/corpora/zh

Each root is the corpus root named in corpora.json ("root" inside the extracted package). For every
question the answer must occur in its document: verbatim in the file for text formats, and for .html/.htm
in the text with tags stripped and whitespace collapsed (the raw-HTML and one-text-node counts are
reported too; an answer inside one text node survives any HTML-to-text that splits at tags). Also
printed: corpus file/byte counts from the include globs, answers that occur more than once in their
document, and answers that also occur in other files of the corpus. Exit 1 on any miss.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import hashlib
import html
import json
import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
HTML_SUFFIXES = {".html", ".htm"}


def strip_html(text: str) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
    text = re.sub(r"(?s)<!--.*?-->", " ", text)
    text = re.sub(r"(?s)<[^>]*>", " ", text)
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


class _Nodes(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.nodes: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            data = re.sub(r"\s+", " ", data).strip()
            if data:
                self.nodes.append(data)


def text_nodes(text: str) -> list[str]:
    parser = _Nodes()
    parser.feed(text)
    parser.close()
    return parser.nodes


def corpus_files(root: Path, include: list[str]) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if any(fnmatch.fnmatchcase(rel, pat) and rel.count("/") == pat.count("/") for pat in include):
                found.append(rel)
    return sorted(found)


def check_set(key: str, root: Path, spec: dict, questions_path: Path) -> int:
    print(f"== {key}: {spec['package']} {spec['version']} at {root}")
    if not root.is_dir():
        print(f"  MISSING corpus root {root}")
        return 1
    files = corpus_files(root, spec["include"])
    raw_bytes = sum((root / f).stat().st_size for f in files)
    texts: dict[str, str] = {}
    for rel in files:
        raw = (root / rel).read_text(encoding="utf-8")
        texts[rel] = strip_html(raw) if Path(rel).suffix.lower() in HTML_SUFFIXES else raw
    text_bytes = sum(len(t.encode("utf-8")) for t in texts.values())
    print(
        f"  corpus files: {len(files)} (corpora.json says {spec['files']}), bytes: {raw_bytes} "
        f"(corpora.json says {spec['bytes']}), text bytes after HTML strip: {text_bytes}"
    )
    misses = 0 if (len(files), raw_bytes) == (spec["files"], spec["bytes"]) else 1
    if misses:
        print("  MISMATCH: file count or bytes differ from corpora.json")

    lines = questions_path.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    ids = collections.Counter(r["id"] for r in rows)
    per_doc = collections.Counter(r["document"] for r in rows)
    found = raw_hits = node_hits = repeated = elsewhere = html_q = 0
    for r in rows:
        doc, answer = r["document"], r["answer"]
        path = root / doc
        if doc not in texts:
            print(f"  MISS {r['id']}: document {doc} is not in the corpus (include globs) or does not exist")
            misses += 1
            continue
        raw = path.read_text(encoding="utf-8")
        is_html = Path(doc).suffix.lower() in HTML_SUFFIXES
        count = texts[doc].count(answer)
        if is_html:
            html_q += 1
            raw_hits += answer in raw
            node_hits += any(answer in n for n in text_nodes(raw))
        if count == 0:
            print(f"  MISS {r['id']}: answer not found in {doc}: {answer!r}")
            misses += 1
            continue
        found += 1
        if count > 1:
            repeated += 1
            print(f"  note {r['id']}: answer occurs {count} times in {doc}")
        others = [f for f, t in texts.items() if f != doc and answer in t]
        if others:
            elsewhere += 1
            print(f"  note {r['id']}: answer also occurs in {', '.join(others[:5])}")
    for qid, n in ids.items():
        if n > 1:
            print(f"  MISS duplicate id {qid}")
            misses += 1
    print(
        f"  questions: {len(rows)}, answers found: {found}, missing: {len(rows) - found}, "
        f"documents: {len(per_doc)}, max questions per document: {max(per_doc.values())}"
    )
    if html_q:
        print(
            f"  HTML questions: {html_q}, answer verbatim in raw HTML: {raw_hits}, "
            f"inside a single text node: {node_hits}"
        )
    print(f"  answers repeated within their document: {repeated}, also found in another file: {elsewhere}")
    return misses


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--en", type=Path, help="extracted English corpus root")
    ap.add_argument("--zh", type=Path, help="extracted Chinese corpus root")
    ap.add_argument("--deb-dir", type=Path, help="folder with the .deb files, to check sha256")
    args = ap.parse_args()
    corpora = json.loads((HERE / "corpora.json").read_text(encoding="utf-8"))
    roots = {"en": args.en, "zh": args.zh}
    if not any(roots.values()):
        ap.error("give --en and/or --zh")
    misses = 0
    for key, root in roots.items():
        if root is None:
            continue
        misses += check_set(key, root, corpora[key], HERE / f"questions-{key}.jsonl")
        if args.deb_dir:
            spec = corpora[key]
            names = [spec["filename"], spec.get("apt_download_filename", spec["filename"])]
            candidates = [args.deb_dir / name for name in names]
            deb = next((p for p in candidates if p.is_file()), None)
            if deb is None:
                print(f"  package file {spec['filename']} not in {args.deb_dir}")
                misses += 1
            elif sha256(deb) != spec["sha256"]:
                print(f"  MISS sha256 of {deb} differs from corpora.json")
                misses += 1
            else:
                print(f"  sha256 of {deb.name} matches")
    print("OK" if misses == 0 else f"FAILED: {misses} problem(s)")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
