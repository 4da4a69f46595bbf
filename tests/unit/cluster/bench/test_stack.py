"""A benchmark stops the stack afterwards only when it started it (even if the run fails)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import local, processes
from cluster.bench.stack import running_stack
from cluster.settings import load_settings


@pytest.mark.parametrize("was_running", [True, False])
def test_running_stack_leaves_a_running_stack_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, was_running: bool
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(processes, "is_running", lambda run_dir, name: was_running)
    monkeypatch.setattr(local, "up", lambda settings: calls.append("up") or "http://svc")
    monkeypatch.setattr(local, "down", lambda settings: calls.append("down"))
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(RuntimeError), running_stack(settings) as url:
        assert url == "http://svc"
        raise RuntimeError("benchmark failed")
    assert calls == (["up"] if was_running else ["up", "down"])
