"""LanceDB store: replace swaps atomically, delete hides at once, compaction, search modes, concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from knowledge.errors import InvalidName, KnowledgeBaseNotFound, SourceFolderNotAllowed, StoreError
from knowledge.store import ChunkRecord, KnowledgeStore

DIM = 4


def vec(*xs: float) -> list[float]:
    norm = sum(x * x for x in xs) ** 0.5
    return [x / norm for x in xs]


@pytest.fixture
def store(tmp_path: Path) -> KnowledgeStore:
    s = KnowledgeStore(tmp_path / "kb", dim=DIM, fts_tokenizer="simple")
    s.create_kb("docs", "test")
    return s


def put(
    store: KnowledgeStore, doc: str, texts: list[str], vectors: list[list[float]], digest: str = "h1"
) -> int:
    chunks = [ChunkRecord(i, t, v) for i, (t, v) in enumerate(zip(texts, vectors, strict=True))]
    return store.replace_document("docs", doc, digest, chunks, source=doc, title=doc)


def test_kb_lifecycle_and_names(store: KnowledgeStore) -> None:
    assert [kb["name"] for kb in store.list_kbs()] == ["docs"]
    with pytest.raises(StoreError, match="already exists"):
        store.create_kb("docs")
    for bad in ("", "a/b", "..", "x" * 65, "a\\b", "../etc"):
        with pytest.raises(InvalidName):
            store.create_kb(bad)
    store.create_kb("知识库_1")
    store.delete_kb("知识库_1")
    with pytest.raises(KnowledgeBaseNotFound):
        store.get_kb("知识库_1")


def test_replace_swaps_all_chunks(store: KnowledgeStore) -> None:
    put(store, "a.txt", ["old one", "old two", "old three"], [vec(1, 0, 0, 0)] * 3, "v1")
    put(store, "a.txt", ["new one"], [vec(1, 0, 0, 0)], "v2")
    docs = store.documents("docs")
    assert docs == [
        {
            "document": "a.txt",
            "content_hash": "v2",
            "source": "a.txt",
            "title": "a.txt",
            "chunks": 1,
            "deleted": False,
        }
    ]
    hits = store.search("docs", query="one", vector=vec(1, 0, 0, 0), mode="vector", top_k=10)
    assert [h.text for h in hits] == ["new one"]


def test_delete_hides_at_once_then_compaction_removes(store: KnowledgeStore) -> None:
    put(store, "a.txt", ["alpha pump"], [vec(1, 0, 0, 0)])
    put(store, "b.txt", ["beta valve"], [vec(0, 1, 0, 0)])
    version = store.version("docs")
    assert store.delete_document("docs", "a.txt")
    assert store.version("docs") == version + 1  # knowledge-base version moves: caches can invalidate
    assert not store.delete_document("docs", "a.txt")
    for mode in ("vector", "fulltext", "hybrid"):
        hits = store.search("docs", query="alpha pump", vector=vec(1, 0, 0, 0), mode=mode, top_k=5)
        assert all(h.document != "a.txt" for h in hits), mode
    assert [d["document"] for d in store.documents("docs")] == ["b.txt"]
    assert store.compact("docs") == 1
    assert [d["document"] for d in store.documents("docs", include_deleted=True)] == ["b.txt"]


def test_search_modes_and_hybrid_fusion(store: KnowledgeStore) -> None:
    put(store, "pump.txt", ["the pump needs oil every week"], [vec(1, 0.1, 0, 0)])
    put(store, "valve.txt", ["valves close under pressure"], [vec(0, 1, 0, 0)])
    put(store, "both.txt", ["pump and valve maintenance schedule"], [vec(0.7, 0.7, 0, 0)])
    store.build_indexes("docs")
    vector = store.search("docs", query="", vector=vec(1, 0, 0, 0), mode="vector", top_k=3)
    assert vector[0].document == "pump.txt" and vector[0].score > vector[-1].score
    text = store.search("docs", query="valve", vector=None, mode="fulltext", top_k=3)
    assert {h.document for h in text} <= {"valve.txt", "both.txt"} and text
    # "both" ranks second in each list; fused, it beats the items that appear in only one list
    hybrid = store.search("docs", query="pump valve", vector=vec(0.9, 0.5, 0, 0), mode="hybrid", top_k=3)
    assert hybrid[0].document == "both.txt"
    assert hybrid[0].score == pytest.approx(2 / (60 + 1), rel=0.02) or hybrid[0].score > hybrid[1].score


def test_threshold_and_filter(store: KnowledgeStore) -> None:
    put(store, "a.txt", ["close"], [vec(1, 0, 0, 0)])
    put(store, "b.txt", ["far"], [vec(0, 0, 0, 1)])
    hits = store.search("docs", query="", vector=vec(1, 0, 0, 0), mode="vector", top_k=5, score_threshold=0.5)
    assert [h.document for h in hits] == ["a.txt"]
    only_b = store.search(
        "docs", query="", vector=vec(1, 0, 0, 0), mode="vector", top_k=5, filters={"doc_id": "b.txt"}
    )
    assert [h.document for h in only_b] == ["b.txt"]
    with pytest.raises(StoreError, match="cannot filter"):
        store.search("docs", query="", vector=vec(1, 0, 0, 0), mode="vector", filters={"vector": 1})


def test_wrong_dimension_refused_and_store_unchanged(store: KnowledgeStore) -> None:
    put(store, "a.txt", ["kept"], [vec(1, 0, 0, 0)])
    with pytest.raises(StoreError, match="dimension"):
        put(store, "a.txt", ["bad"], [[1.0, 0.0]])
    assert store.documents("docs")[0]["content_hash"] == "h1"


def test_concurrent_replace_and_query_never_mix_versions(store: KnowledgeStore) -> None:
    n = 6
    put(store, "doc.txt", [f"v0 part {i}" for i in range(n)], [vec(1, 0, 0, 0)] * n, "v0")
    stop = threading.Event()
    seen: list[tuple[int, set[str]]] = []

    def reader() -> None:
        while not stop.is_set():
            hits = store.search("docs", query="", vector=vec(1, 0, 0, 0), mode="vector", top_k=50)
            seen.append((len(hits), {h.text.split()[0] for h in hits}))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for version in range(1, 8):
        put(
            store, "doc.txt", [f"v{version} part {i}" for i in range(n)], [vec(1, 0, 0, 0)] * n, f"v{version}"
        )
    stop.set()
    for t in threads:
        t.join()
    assert seen
    assert all(count == n for count, _ in seen)  # never neither version, never a partial one
    assert all(len(versions) == 1 for _, versions in seen)  # never both versions at once


def test_a_source_folder_must_be_inside_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "sources"
    (root / "manuals").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "innocent").symlink_to(tmp_path / "outside", target_is_directory=True)
    s = KnowledgeStore(tmp_path / "kb", dim=DIM, fts_tokenizer="simple", source_roots=[root])
    # Relative to the first root, or absolute with `..` in it: kept as the real path.
    assert s.create_kb("rel", source_folder="manuals")["source_folder"] == str((root / "manuals").resolve())
    kept = s.create_kb("abs", source_folder=str(root / "manuals" / ".." / "manuals"))
    assert kept["source_folder"] == str((root / "manuals").resolve())
    assert s.create_kb("none")["source_folder"] is None
    for bad in ("/etc", "../outside", "innocent", str(tmp_path / "outside"), "missing"):
        with pytest.raises(SourceFolderNotAllowed):
            s.create_kb("refused", source_folder=bad)
    assert [kb["name"] for kb in s.list_kbs()] == ["abs", "none", "rel"]  # nothing half-created
    with pytest.raises(KnowledgeBaseNotFound):
        s.get_kb("refused")


def test_a_store_without_roots_follows_no_folder(tmp_path: Path) -> None:
    s = KnowledgeStore(tmp_path / "kb", dim=DIM, fts_tokenizer="simple")
    with pytest.raises(SourceFolderNotAllowed):
        s.create_kb("docs", source_folder=str(tmp_path))


def test_export_gives_a_live_documents_chunks_in_order_for_a_reindex(store: KnowledgeStore) -> None:
    chunks = [ChunkRecord(i, f"part {i}", vec(1, 0, 0, 0), {"heading": f"h{i}"}) for i in (2, 0, 1)]
    store.replace_document("docs", "a.txt", "v1", chunks, source="src/a.txt", title="A", fmt="txt")
    exported = store.export_document("docs", "a.txt")
    assert exported == {
        "doc_id": "a.txt",
        "content_hash": "v1",
        "source": "src/a.txt",
        "title": "A",
        "fmt": "txt",
        "texts": ["part 0", "part 1", "part 2"],
        "metadata": [{"heading": "h0"}, {"heading": "h1"}, {"heading": "h2"}],
    }
    store.delete_document("docs", "a.txt")
    with pytest.raises(StoreError, match="not found"):
        store.export_document("docs", "a.txt")


def test_a_batch_of_new_documents_is_one_commit_and_a_replaced_one_swaps(store: KnowledgeStore) -> None:
    from knowledge.store import DocumentRecord

    put(store, "old.txt", ["pump one"], [vec(1, 0, 0, 0)], digest="v1")
    table = store._table("docs")
    before = table.version
    batch = [
        DocumentRecord(f"n{i}.txt", f"h{i}", [ChunkRecord(0, f"valve {i}", vec(0, 1, 0, 0))])
        for i in range(5)
    ]
    replaced = DocumentRecord("old.txt", "v2", [ChunkRecord(0, "pump two", vec(1, 0, 0, 0))] * 1)
    assert store.replace_documents("docs", [*batch, replaced]) == [1] * 6
    assert table.version - before == 2  # one append for the five new ones, one swap for the old one
    assert store.content_hashes("docs", ["old.txt", "n3.txt", "missing.txt"]) == {
        "old.txt": "v2",
        "n3.txt": "h3",
    }
    texts = {
        h.text for h in store.search("docs", query="pump", vector=vec(1, 0, 0, 0), mode="vector", top_k=9)
    }
    assert "pump one" not in texts and "pump two" in texts


def test_a_bad_vector_in_a_batch_writes_nothing(store: KnowledgeStore) -> None:
    from knowledge.store import DocumentRecord

    good = DocumentRecord("a.txt", "h", [ChunkRecord(0, "pump", vec(1, 0, 0, 0))])
    bad = DocumentRecord("b.txt", "h", [ChunkRecord(0, "valve", [1.0, 0.0])])
    with pytest.raises(StoreError, match="dimension"):
        store.replace_documents("docs", [good, bad])
    assert store.content_hashes("docs") == {}


def test_an_index_built_with_another_tokenizer_is_rebuilt_at_the_next_write(tmp_path: Path) -> None:
    old = KnowledgeStore(tmp_path / "kb", dim=DIM, fts_tokenizer="ngram")
    old.create_kb("docs")
    old.replace_document("docs", "a.txt", "h", [ChunkRecord(0, "pump maintenance", vec(1, 0, 0, 0))])
    old.refresh_indexes("docs")
    new = KnowledgeStore(tmp_path / "kb", dim=DIM)  # the default: icu, English stemming
    table = new._table("docs")
    assert new._fts_index(table).index_details["base_tokenizer"] == "ngram"
    new.replace_document("docs", "b.txt", "h", [ChunkRecord(0, "valve inspections", vec(0, 1, 0, 0))])
    new.refresh_indexes("docs")
    assert new._fts_index(table).index_details["base_tokenizer"] == "icu"
    hits = new.search("docs", query="inspection", vector=None, mode="fulltext", top_k=5)
    assert [h.document for h in hits] == ["b.txt"]  # stemmed: inspections ~ inspection


def test_chinese_full_text_and_hybrid_by_the_query_script(tmp_path: Path) -> None:
    from knowledge.config import FusionWeights

    weights = {"latin": FusionWeights(), "cjk": FusionWeights(vector=0.0)}
    s = KnowledgeStore(tmp_path / "kb", dim=DIM, hybrid_weights=weights)
    s.create_kb("docs")
    texts = {
        "apt.txt": ("APT 以字母顺序读取配置文件，最后一个文件可以覆盖前面的配置。", vec(0, 0, 0, 1)),
        "pump.txt": ("泵的维护计划每周检查一次轴承。", vec(1, 0, 0, 0)),
    }
    for doc, (text, v) in texts.items():
        s.replace_document("docs", doc, "h", [ChunkRecord(0, text, v)])
    s.refresh_indexes("docs")
    assert [h.document for h in s.search("docs", query="配置文件", vector=None, mode="fulltext")][
        0
    ] == "apt.txt"
    # the vector points at pump.txt; a Chinese query's hybrid follows full-text alone (cjk.vector = 0)
    hybrid = s.search("docs", query="配置文件的顺序", vector=vec(1, 0, 0, 0), mode="hybrid", top_k=1)
    assert [h.document for h in hybrid] == ["apt.txt"]
    # a Latin query still fuses both rankings
    latin = s.search("docs", query="pump", vector=vec(1, 0, 0, 0), mode="hybrid", top_k=2)
    assert latin[0].document == "pump.txt"


def test_a_document_written_after_the_index_ranks_by_its_words_not_by_its_age(tmp_path: Path) -> None:
    # Rows not yet in the full-text index are searched with other BM25 statistics: before every write was
    # folded in, the first batch's notes outranked the second's for the same words.
    s = KnowledgeStore(tmp_path / "kb", dim=DIM)
    s.create_kb("docs")
    names = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    for batch in (names[:6], names[6:]):
        for name in batch:
            text = f"The turbine of unit {name} is inspected every week."
            s.replace_document("docs", f"{name}.txt", "h", [ChunkRecord(0, text, vec(1, 0, 0, 0))])
        s.refresh_indexes("docs")
    hits = s.search("docs", query="turbine kilo", vector=None, mode="fulltext", top_k=3)
    assert hits[0].document == "kilo.txt"
    # the same words score the same, whenever they were written
    same = s.search("docs", query="turbine", vector=None, mode="fulltext", top_k=12)
    assert len(same) == 12 and max(h.score for h in same) == pytest.approx(min(h.score for h in same))
