"""`raychat kb sync` refuses a folder outside `knowledge.source_roots` before it reaches the cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster import kb
from cluster.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("RAYCHAT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RAYCHAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


def test_sync_refuses_folders_outside_the_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    (tmp_path / "data" / "sources" / "manuals").mkdir(parents=True)
    (tmp_path / "outside").mkdir()

    def cluster_asked(*args: object) -> None:
        raise RuntimeError("cluster asked")  # a refused folder never gets this far

    monkeypatch.setattr(kb, "_api", cluster_asked)
    for folder in ("/etc", str(tmp_path / "outside"), "outside", "data/sources/../..", "data/sources/nope"):
        with pytest.raises(SystemExit) as info:
            kb.sync_once(settings, "docs", folder)
        assert str(info.value.code).startswith("raychat kb sync: source_folder"), folder
    # Inside: relative to the working directory, as a shell user means it; the cluster is asked next.
    with pytest.raises(RuntimeError, match="cluster asked"):
        kb.sync_once(settings, "docs", "data/sources/manuals")
