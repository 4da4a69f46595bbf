"""The tier load shapes step through their stages; the Locust runner builds the right command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import loadtest
from cluster.settings import load_settings
from loadtests import shapes

ROOT = Path(__file__).resolve().parents[3]


def shape_at(cls: type[shapes.StagedShape], seconds: float) -> tuple[int, float] | None:
    shape = cls()
    shape.get_run_time = lambda: seconds  # type: ignore[method-assign]
    return shape.tick()


@pytest.mark.parametrize(
    ("cls", "low", "high"),
    [(shapes.Tier1Shape, 1, 49), (shapes.Tier2Shape, 50, 200), (shapes.Tier3Shape, 200, 500)],
)
def test_each_tier_stays_in_its_band_and_ends(cls: type[shapes.StagedShape], low: int, high: int) -> None:
    total = sum(d for d, _, _ in cls.stages)
    seen = []
    t = 0.0
    while (step := shape_at(cls, t)) is not None:
        users, rate = step
        assert low <= users <= high and rate > 0
        seen.append(users)
        t += 1
    assert t == pytest.approx(total, abs=1)
    assert seen == sorted(seen)  # it ramps up, stage by stage
    assert seen[-1] == cls.stages[-1][1]
    assert shape_at(cls, total + 5) is None


def test_tier3_reaches_500_users() -> None:
    assert max(u for _, u, _ in shapes.Tier3Shape.stages) == 500


def test_stage_boundaries() -> None:
    class Two(shapes.StagedShape):
        abstract = False
        stages = [(10.0, 5, 1.0), (5.0, 8, 2.0)]

    assert shape_at(Two, 0) == (5, 1.0)
    assert shape_at(Two, 9.9) == (5, 1.0)
    assert shape_at(Two, 10) == (8, 2.0)
    assert shape_at(Two, 15) is None


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tier"):
        shapes.tier_stages("4")


def test_locustfile_exposes_the_tier_shape_to_locust(tmp_path: Path) -> None:
    # In a subprocess: importing Locust monkey-patches the interpreter with gevent.
    script = (
        "from locust.util.load_locustfile import load_locustfile\n"
        "users, shapes = load_locustfile('loadtests/locustfile.py')\n"
        "shape = shapes[0]; shape.get_run_time = lambda: 0\n"
        "print(len(shapes), shape.tick(), sorted(users))\n"
    )
    env = {**os.environ, "RAYCHAT_TIER": "3"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    count, rest = out.stdout.strip().split(" ", 1)
    assert count == "1" and rest.startswith("(200, 25.0)")
    assert "StreamedChatUser" in rest and "KnowledgeSearchUser" in rest


def test_locust_command_and_targets(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert loadtest.target_url(settings, "nginx") == "http://127.0.0.1:8080"
    assert loadtest.target_url(settings, "traefik") == "http://127.0.0.1:8081"
    assert loadtest.target_url(settings, "direct") == "https://127.0.0.1:8000"  # mTLS to Serve
    argv = loadtest.locust_command("http://h", tmp_path / "r", users=20, duration="20s", user_classes=["A"])
    assert argv[-1] == "A" and "--headless" in argv and argv[argv.index("-u") + 1] == "20"
    shaped = loadtest.locust_command("http://h", tmp_path / "r")
    assert "-u" not in shaped and "--csv" in shaped


def test_locust_gets_the_service_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deployments.gateway.auth.secrets import write_secret

    monkeypatch.setenv("RAYCHAT_TIER", "2")
    monkeypatch.setenv("RAYCHAT_API_KEY", "from-the-shell")
    settings = load_settings(data_dir=tmp_path)
    write_secret(settings.secrets_dir / "service.key", "rc-000000000000.service")
    env = loadtest.locust_env(settings, tmp_path / "c.yaml")
    assert env["RAYCHAT_API_KEY"] == "rc-000000000000.service" and "RAYCHAT_TIER" not in env
    assert env["RAYCHAT_LOADTEST_CONFIG"] == str(tmp_path / "c.yaml")
    off = load_settings(data_dir=tmp_path / "off", auth={"enabled": False})
    assert "RAYCHAT_API_KEY" not in loadtest.locust_env(off)
