"""What `raychat up` prints: the key once, then where it is; a loud warning when auth is off."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import cli, local
from cluster.keys import Bootstrap
from cluster.settings import load_settings


def welcome(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], report: Bootstrap | None
) -> str:
    monkeypatch.setattr(local, "last_bootstrap", report)
    cli.print_welcome(load_settings(), "http://127.0.0.1:8080")
    return capsys.readouterr().out


def test_first_start_shows_the_key_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path("data/secrets/admin.key")
    first = welcome(monkeypatch, capsys, Bootstrap(path, "rc-0123456789ab." + "x" * 43, []))
    assert "rc-0123456789ab." in first and f"cat {path}" in first and "Authorization: Bearer" in first
    later = welcome(monkeypatch, capsys, Bootstrap(path, None, []))
    assert "rc-" not in later.replace("raychat keys", "") and str(path) in later


def test_auth_off_warns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = welcome(monkeypatch, capsys, None)
    assert "WARNING" in out and "authentication is OFF" in out and "Authorization" not in out
