"""The head's `ray start` line, the start environment, and the worker pid files `raychat down` stops
(no processes started or stopped)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from cluster import local, processes, ray_node
from cluster.settings import load_settings


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_head_argv(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, ray={"num_cpus": 3, "num_gpus": 1})
    argv = ray_node.head_argv(settings)
    assert Path(argv[0]).name == "ray" and argv[1:3] == ["start", "--head"]
    assert "--block" in argv and "--disable-usage-stats" in argv and "--address" not in argv
    assert _flag(argv, "--port") == str(settings.ray.port)
    assert _flag(argv, "--node-ip-address") == _flag(argv, "--dashboard-host") == settings.ray.host
    assert _flag(argv, "--num-cpus") == "3.0" and _flag(argv, "--num-gpus") == "1"
    temp = _flag(argv, "--temp-dir")
    assert temp == str(ray_node.head_temp_dir(settings)) and len(temp) <= 36


def test_worker_env_lets_a_loopback_head_take_workers(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path)
    assert ray_node.start_env(settings)["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert ray_node.start_env(settings, worker=True)["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
    assert ray_node.start_env(settings)["TMPDIR"] == ray_node.runtime_env_vars(settings)["TMPDIR"]


def _record(run_dir: Path, service: str, create_time: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "create_time": create_time, "argv": []}
    processes.pid_file(run_dir, service).write_text(json.dumps(record))


def test_down_stops_the_running_workers_and_the_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(None, data_dir=tmp_path)
    alive = psutil.Process(os.getpid()).create_time()
    _record(settings.run_dir, "ray-worker-gpu-b", alive)  # this test process stands in for a raylet
    _record(settings.run_dir, "ray-worker-gpu-a", alive)
    _record(settings.run_dir, "ray-worker-gone", 1.0)  # a stale pid file
    assert ray_node.local_workers(settings) == ["gpu-a", "gpu-b"]
    stopped: list[str] = []
    monkeypatch.setattr(ray_node, "stop", lambda settings, service: stopped.append(service) or True)
    assert local.down(settings) == ["ray-worker-gpu-a", "ray-worker-gpu-b", local.RAY_HEAD]
    assert stopped == ["ray-worker-gpu-a", "ray-worker-gpu-b", local.RAY_HEAD]
