from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil

from cluster import processes

# A parent that starts a child in its own session-less subprocess, then waits: like `ray start --block`.
PARENT = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
)


def test_stop_kills_recorded_process_and_its_children(tmp_path: Path) -> None:
    pid = processes.spawn(tmp_path, "svc", [sys.executable, "-c", PARENT], log_file=tmp_path / "svc.log")
    assert processes.is_running(tmp_path, "svc")
    deadline = time.monotonic() + 10
    while not psutil.Process(pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = psutil.Process(pid).children()[0]
    assert processes.stop(tmp_path, "svc", timeout=5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert not processes.pid_file(tmp_path, "svc").exists()


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    processes.pid_file(tmp_path, "gone").write_text('{"pid": 999999, "create_time": 1.0}')
    assert not processes.is_running(tmp_path, "gone")
    assert not processes.stop(tmp_path, "gone")


def test_reused_pid_is_not_ours(tmp_path: Path) -> None:
    import os

    me = psutil.Process(os.getpid())
    processes.pid_file(tmp_path, "other").write_text(
        f'{{"pid": {me.pid}, "create_time": {me.create_time() - 100}}}'
    )
    assert not processes.is_running(tmp_path, "other")


def test_kill_now_ends_the_whole_session_without_grace(tmp_path: Path) -> None:
    # A parent that ignores SIGTERM: only SIGKILL, as in a power cut, ends it at once.
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + PARENT
    pid = processes.spawn(tmp_path, "node", [sys.executable, "-c", stubborn], log_file=tmp_path / "n.log")
    deadline = time.monotonic() + 10
    while not psutil.Process(pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = psutil.Process(pid).children()[0]
    assert processes.kill_now(tmp_path, "node") == 2
    for proc in (psutil.Process(pid) if psutil.pid_exists(pid) else None, child):
        assert proc is None or not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert not processes.pid_file(tmp_path, "node").exists()
    assert processes.kill_now(tmp_path, "node") == 0


def test_a_stepped_clock_does_not_lose_a_running_service(tmp_path: Path) -> None:
    """A virtual machine's wall clock can jump (pause, resume): the record still names the process by its
    start in ticks since boot, so `down` finds what `up` started."""
    pid = processes.spawn(tmp_path, "svc", [sys.executable, "-c", PARENT], log_file=tmp_path / "svc.log")
    path = processes.pid_file(tmp_path, "svc")
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"create_time": record["create_time"] - 3600}))
    assert processes.read_pid(tmp_path, "svc") == pid
    path.write_text(json.dumps(record | {"start_ticks": record["start_ticks"] + 1}))
    assert processes.read_pid(tmp_path, "svc") is None  # another process with the same pid
    path.write_text(json.dumps(record))
    assert processes.stop(tmp_path, "svc", timeout=5)
