"""Background processes that `raychat up` starts and `raychat down` stops, by recorded pid only.

Each service runs as the leader of a new session (`start_new_session`), and its pid is written to
`data/run/<name>.pid`. Stopping signals that pid, its descendants and every process still in its session
(Ray's raylet and workers, vLLM's engine processes), never anything found by name.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psutil

from cluster.waiting import WaitTimeout, wait_until

# The environment this program started with. Importing Ray, torch or vLLM adds variables to os.environ
# (LD_LIBRARY_PATH from opencv, KMP_*, TORCHINDUCTOR_*); services started later must not inherit them.
BASE_ENV = dict(os.environ)


class ProcessError(RuntimeError):
    pass


class ProcessTimeout(ProcessError, WaitTimeout):
    """A service did not come up in time: still a ProcessError (what `raychat` reports) and a TimeoutError."""


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def read_pid(run_dir: Path, name: str) -> int | None:
    path = pid_file(run_dir, name)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid, started = int(record["pid"]), float(record["create_time"])
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        # A reused pid belongs to another process: compare start times. The kernel's start time in ticks
        # since boot is exact; psutil's create_time adds the boot time as the wall clock now reads it, and
        # a virtual machine's clock can be stepped (paused and resumed), which once made `down` forget a
        # running stack.
        recorded, now = record.get("start_ticks"), start_ticks(pid)
        if recorded is not None and now is not None:
            return pid if now == int(recorded) else None
        if abs(proc.create_time() - started) < 1:
            return pid
    except psutil.NoSuchProcess:
        pass
    return None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22); None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after its end.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def is_running(run_dir: Path, name: str) -> bool:
    return read_pid(run_dir, name) is not None


def spawn(
    run_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    record = {
        "pid": proc.pid,
        "create_time": psutil.Process(proc.pid).create_time(),
        "start_ticks": start_ticks(proc.pid),
        "argv": list(argv),
    }
    pid_file(run_dir, name).write_text(json.dumps(record))
    return proc.pid


def _session_members(leader: int) -> list[psutil.Process]:
    members: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(leader)
        members[root.pid] = root
        for child in root.children(recursive=True):
            members[child.pid] = child
    except psutil.NoSuchProcess:
        pass
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and os.getsid(proc.pid) == leader:
                members[proc.pid] = proc
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return list(members.values())


def end_processes(procs: list[psutil.Process], *, grace_s: float) -> list[psutil.Process]:
    """SIGTERM exactly these processes, SIGKILL those left after grace_s (all at once when grace_s is 0);
    returns the survivors."""
    alive = procs
    if grace_s > 0:
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        alive = _wait_gone(procs, grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return _wait_gone(alive, 10)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Waits until each process has exited or is a zombie (dead; only its parent, which may not be us,
    can reap it: psutil's own wait would sit out the whole timeout on one); returns the others."""

    def living() -> list[psutil.Process]:
        out = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
                elif proc.ppid() == os.getpid():
                    proc.wait(timeout=0)  # our own child: reap it
            except (psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
                continue
        return out

    try:
        wait_until(lambda: not living(), timeout_s=timeout, interval_s=0.1, what="processes to exit")
    except WaitTimeout:
        pass
    return living()


def stop(run_dir: Path, name: str, *, timeout: float = 20.0) -> bool:
    """Stop a recorded service and everything in its session. True if something was running."""
    pid = read_pid(run_dir, name)
    path = pid_file(run_dir, name)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    end_processes(_session_members(pid), grace_s=timeout)
    path.unlink(missing_ok=True)
    return True


def kill_now(run_dir: Path, name: str) -> int:
    """SIGKILL a recorded service and its whole session at once, the way a power cut would (failure
    drills); returns how many processes were killed."""
    pid = read_pid(run_dir, name)
    if pid is None:
        return 0
    members = _session_members(pid)
    end_processes(members, grace_s=0)
    pid_file(run_dir, name).unlink(missing_ok=True)
    return len(members)


def wait_http(
    url: str,
    *,
    timeout: float,
    ok: Sequence[int] = (200,),
    what: str = "",
    context: ssl.SSLContext | None = None,
) -> None:
    """Until `url` answers with a status in `ok`; `context` for HTTPS with raychat's CA (redirects too)."""
    last = "no answer"

    def answered() -> bool:
        nonlocal last
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as resp:
                if resp.status in ok:
                    return True
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        return False

    wait_until(
        answered,
        timeout_s=timeout,
        interval_s=0.5,
        what=f"{what or url} is ready",
        detail=lambda: last,
        error=ProcessTimeout,
    )


def port_open(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
