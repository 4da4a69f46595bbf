"""`raychat join`: the worker's `ray start` command line, names and resources (no processes started)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cluster import nodes, ray_node
from cluster.ray_node import runtime_env_vars
from cluster.settings import load_settings


def _settings(tmp_path: Path, **ray: object):  # type: ignore[no-untyped-def]
    return load_settings(None, data_dir=tmp_path, ray=ray or {})


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_loopback_head_keeps_its_address(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    argv = ray_node.worker_argv(settings, address="127.0.0.1:6380", name="gpu-a", num_gpus=2, num_cpus=4)
    assert argv[:3] == [sys.executable, "-m", "cluster.ray_worker"]
    assert argv[3] == "start" and "--head" not in argv and "--block" in argv
    assert _flag(argv, "--address") == "127.0.0.1:6380" and _flag(argv, "--num-gpus") == "2"
    assert _flag(argv, "--num-cpus") == "4" and _flag(argv, "--node-ip-address") == "127.0.0.1"
    ports = [
        int(_flag(argv, f))
        for f in (
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
        )
    ]
    assert len(set(ports)) == 4  # fixed and distinct: no clash with the head's agents on one host
    assert _flag(argv, "--temp-dir").endswith("rw-gpu-a") and len(_flag(argv, "--temp-dir")) <= 36


def test_lan_head_uses_plain_ray_start(tmp_path: Path) -> None:
    settings = _settings(tmp_path, host="10.0.0.5")
    argv = ray_node.worker_argv(
        settings, address="10.0.0.2:6380", name="w", num_gpus=1, num_cpus=None, resources={"llm": 1.0}
    )
    assert Path(argv[0]).name == "ray" and "--num-cpus" not in argv
    assert _flag(argv, "--resources") == '{"llm": 1.0}'
    # Only a loopback head needs Ray's single-host mode; a LAN head keeps Ray's cluster default.
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in runtime_env_vars(settings)
    assert runtime_env_vars(_settings(tmp_path))["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_names_and_resources_are_checked() -> None:
    assert nodes.service_name("gpu-1") == "ray-worker-gpu-1"
    for bad in ("", "GPU", "a/b", "x" * 17):
        with pytest.raises(nodes.NodeError):
            nodes.service_name(bad)
    assert nodes.parse_resources('{"llm": 2}') == {"llm": 2.0}
    for bad in ("{", "[1]", '{"llm": 0}', '{"llm": "2"}'):
        with pytest.raises(nodes.NodeError, match="--resources"):
            nodes.parse_resources(bad)


def test_no_workers_recorded_in_a_fresh_data_dir(tmp_path: Path) -> None:
    assert ray_node.local_workers(_settings(tmp_path)) == []
