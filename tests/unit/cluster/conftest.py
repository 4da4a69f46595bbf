from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from their defaults only: no RAYCHAT_* of the caller's shell, no stray ./raychat.yaml."""
    for key in list(os.environ):
        if key.startswith("RAYCHAT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
