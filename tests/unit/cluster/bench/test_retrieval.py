"""The retrieval evaluation's scoring and its question sets."""

from __future__ import annotations

import json

import pytest

from cluster.bench import retrieval
from cluster.bench.retrieval import Question, correct, scores

Q = Question("en-x", "Which helper stores passwords?", "gitfaq.txt", "the `store` credential manager stores")


def test_a_hit_is_correct_only_from_the_document_and_with_the_answer() -> None:
    assert correct(Q, "gitfaq.txt", "you can use\nthe  `store` credential manager stores in a file")
    assert not correct(Q, "other.txt", "the `store` credential manager stores")
    assert not correct(Q, "gitfaq.txt", "nothing about it here")


def test_an_answer_cut_by_a_chunk_boundary_still_counts() -> None:
    assert correct(Q, "gitfaq.txt", "... you can use the `store` credent")
    assert correct(Q, "gitfaq.txt", "ntial manager stores in a file ...")


def test_scores() -> None:
    got = scores([1, 3, None, 12])
    assert got == {"hit@1": 0.25, "hit@5": 0.5, "mrr": round((1 + 1 / 3) / 4, 3)}


@pytest.mark.parametrize(("language", "least"), [("en", 50), ("zh", 50)])
def test_question_sets_are_well_formed(language: str, least: int) -> None:
    questions = retrieval.load_questions(language)
    assert len(questions) >= least
    assert len({q.id for q in questions}) == len(questions)
    assert all(q.question and q.document and len(q.answer) >= 10 for q in questions)
    spec = json.loads((retrieval.EVAL / "corpora.json").read_text())[language]
    assert len(spec["sha256"]) == 64 and spec["version"]


def test_include_globs_stay_within_one_folder_level() -> None:
    from pathlib import Path

    globs = ["*.txt", "howto/*.txt"]
    assert retrieval._included(Path("gitfaq.txt"), globs)
    assert retrieval._included(Path("howto/a.txt"), globs)
    assert not retrieval._included(Path("RelNotes/1.5.txt"), globs)
    assert not retrieval._included(Path("howto/deep/a.txt"), globs)
