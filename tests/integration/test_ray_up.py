"""`ray-cluster.yaml` for real: the Ray cluster launcher starts a head node on this machine over ssh
(`ray up`), runs a script there (`ray submit`) and a command (`ray exec 'ray status'`), and stops it
(`ray down`).

This machine stands in for an on-prem server: provider `local` with head_ip 127.0.0.1, reached through an
sshd of the test's own on a loopback port (the launcher has no ssh port setting, so `ssh_proxy_command` with
nc), as a non-root user whose login shell finds the project's venv (tests/sshd.py). The config is the
project's ray-cluster.yaml with the machine-specific parts replaced (ips, user, key, no workers, nothing to
sync or install: ~/raychat is a symlink to this checkout) and test ports in its own head start command, which
has no `ray stop`. The Ray instances already on the machine (the test stack, a developer's stack) must
survive: `ray down` itself runs `ray stop` on the head, which as the ssh user can only end that user's
processes, so the test checks their raylet/GCS pids before and after.

Needs root (apt-get, useradd, sshd); installs what is missing and leaves only the packages behind.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from tests import sshd
from tests.conftest import ROOT

CLUSTER = "raychat-ray-up-test"
HEAD_PORT = 26480  # the test stack's GCS is 26380, a developer's 6380
DASHBOARD_PORT = 28465
AGENT_PORT = 28466  # the dashboard agent's default 52365 and the client server's 10001 are taken by
CLIENT_PORT = 26481  # any other head on the machine
WORKER_PORTS = (26500, 26599)
RAY = str(Path(sys.executable).parent / "ray")

JOB = """\
import getpass, json, ray

ray.init(address="auto", log_to_driver=False, logging_level="WARNING")

@ray.remote(num_cpus=1)
def square(x):
    return x * x, getpass.getuser()

results = ray.get([square.remote(i) for i in range(5)])
print("RAY_UP_RESULT " + json.dumps({
    "gcs": ray.get_runtime_context().gcs_address,
    "cpus": ray.cluster_resources().get("CPU"),
    "alive_nodes": sum(1 for node in ray.nodes() if node["Alive"]),
    "sum": sum(value for value, _ in results),
    "task_users": sorted({user for _, user in results}),
    "driver_user": getpass.getuser(),
}))
"""


@dataclass
class Head:
    user: sshd.LoginUser
    key: Path
    port: int
    workdir: Path
    server: sshd.Sshd

    @property
    def launcher_env(self) -> dict[str, str]:
        # The launcher's temp files (its copy of the local provider's state, the config cache, the bootstrap
        # config) in the test's dir, not in /tmp/ray.
        tmp = str(self.workdir / "launcher")
        return {**os.environ, "RAY_TMPDIR": tmp, "TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0"}

    def head_logs(self, chars: int = 2500) -> str:
        logs = self.user.home / "tmp" / "ray" / "session_latest" / "logs"
        parts = []
        for name in ("monitor.log", "monitor.err", "raylet.err", "gcs_server.err", "dashboard.err"):
            path = logs / name
            if path.is_file():
                parts.append(f"--- {path}\n{path.read_text(errors='replace')[-chars:]}")
        procs = []
        for proc in self.user.processes():
            try:
                procs.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
            except psutil.NoSuchProcess:
                pass
        parts.append("--- processes of the ssh user\n" + "\n".join(procs))
        return "\n".join(parts) + f"\n--- sshd\n{self.server.log_tail(chars)}"


def _control_dir() -> Path:
    """Where the launcher keeps its ssh ControlMaster sockets for this cluster (command_runner.py)."""
    user_hash = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
    return Path(f"/tmp/ray_ssh_{user_hash}") / hashlib.sha256(CLUSTER.encode()).hexdigest()[:10]


def _close_control_masters() -> None:
    control = _control_dir()
    if not control.is_dir():
        return
    for sock in control.iterdir():
        subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "unused"], capture_output=True, timeout=30)
    shutil.rmtree(control, ignore_errors=True)
    try:
        control.parent.rmdir()  # only if no other cluster of this user has sockets there
    except OSError:
        pass


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    if os.geteuid() != 0:
        pytest.skip("needs root: installs openssh-server, adds a user, runs an sshd")
    if not shutil.which("apt-get") and not sshd.SSHD.is_file():
        pytest.skip("needs apt-get (Debian/Ubuntu) to install openssh-server")
    sshd.ensure_packages()
    workdir = Path(tempfile.mkdtemp(prefix="raychat-ray-up-"))
    (workdir / "launcher").mkdir()
    key = sshd.keygen(workdir / "id_ed25519", "raychat-ray-up-test")
    user = sshd.ensure_user(ROOT, (workdir / "id_ed25519.pub").read_text())
    grants = sshd.TraverseGrants(user)
    server: sshd.Sshd | None = None
    try:
        # The user must reach the repo, the venv, and the interpreter the venv links to (which may live in a
        # mode-700 home, e.g. /root/.pyenv).
        python = Path(os.path.realpath(ROOT / ".venv" / "bin" / "python"))
        grants.grant_for(ROOT / ".venv" / "bin" / "ray", python, python.parent.parent / "lib")
        place_ray_token(user)
        server = sshd.Sshd(workdir / "sshd", user.name, sshd.free_port(28222)).start()
        machine = Head(user, key, server.port, workdir, server)
        check = subprocess.run(
            [*sshd.ssh_argv(key, user.name, server.port), "command -v ray"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, check.stderr + machine.head_logs()
        assert check.stdout.strip() == str(ROOT / ".venv" / "bin" / "ray")
        imports = subprocess.run(
            [*sshd.ssh_argv(key, user.name, server.port, proxy=True), 'python -c "import ray"'],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert imports.returncode == 0, f"the ssh user cannot import ray from {ROOT}/.venv: {imports.stderr}"
        yield machine
    finally:
        _close_control_masters()
        # Everything of this user was started by this test (its sshd sessions, the Ray head).
        sshd.stop_processes(user.processes())
        if server is not None:
            server.stop()
        grants.revoke()
        left = user.processes()
        if left:
            print(f"not removing {user.name}: processes {[p.pid for p in left]} are left", file=sys.stderr)
        else:
            sshd.remove_user(user)
        shutil.rmtree(workdir, ignore_errors=True)


def place_ray_token(user: sshd.LoginUser) -> None:
    """What ray-cluster.yaml's file mount does: a token at Ray's default path in the user's home, 0600."""
    ray_dir = user.home / ".ray"
    ray_dir.mkdir(mode=0o700, exist_ok=True)
    token = ray_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    for path in (ray_dir, token):
        os.chown(path, user.uid, user.gid)


def render_config(head: Head) -> Path:
    """The project's ray-cluster.yaml, pointed at this machine, with test ports and sizes."""
    project = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    for command in [*project["head_start_ray_commands"], *project["worker_start_ray_commands"]]:
        assert "ray stop" not in command  # it would end other Ray instances on the machine
    [start] = project["head_start_ray_commands"]
    assert project["file_mounts"]["~/.ray/auth_token"] == "data/secrets/ray.token"
    assert any("RAY_AUTH_MODE=token" in command for command in project["initialization_commands"])
    for part in ("cd ~/raychat", "RAY_AUTH_MODE=token .venv/bin/ray start --head", "--port=6380"):
        assert part in start, (part, start)
    test_flags = (
        f"--port={HEAD_PORT} --node-ip-address=127.0.0.1 --dashboard-port={DASHBOARD_PORT}"
        f" --dashboard-agent-listen-port={AGENT_PORT} --ray-client-server-port={CLIENT_PORT}"
        f" --min-worker-port={WORKER_PORTS[0]} --max-worker-port={WORKER_PORTS[1]}"
        " --num-cpus=1 --object-store-memory=200000000"
    )
    start = start.replace("--port=6380", test_flags).replace(
        "--dashboard-host=0.0.0.0", "--dashboard-host=127.0.0.1"
    )
    start = start.replace(
        "RAY_USAGE_STATS_ENABLED=0", "RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
    )
    config = {
        **project,
        "cluster_name": CLUSTER,
        "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
        "auth": {
            "ssh_user": head.user.name,
            "ssh_private_key": str(head.key),
            "ssh_proxy_command": f"nc 127.0.0.1 {head.port}",
        },
        "min_workers": 0,
        "max_workers": 0,
        "file_mounts": {},  # ~/raychat is this checkout already (a symlink)
        "setup_commands": [],  # and installed: its .venv
        "head_start_ray_commands": [start],
    }
    path = head.workdir / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def ray_processes(*, uid: int, mine: bool) -> dict[int, float]:
    """raylet/gcs_server pids (with start times) of this uid (mine) or of everyone else."""
    found = {}
    for proc in psutil.process_iter(["name", "uids", "create_time"]):
        uids = proc.info["uids"]
        if proc.info["name"] in ("raylet", "gcs_server") and uids is not None and (uids.real == uid) == mine:
            found[proc.pid] = proc.info["create_time"]
    return found


def still_running(procs: dict[int, float]) -> dict[int, float]:
    alive = {}
    for pid, created in procs.items():
        try:
            if psutil.Process(pid).create_time() == created:
                alive[pid] = created
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.timeout(2400)
def test_ray_up_submit_exec_down_on_this_machine(head: Head) -> None:
    config = render_config(head)
    job = head.workdir / "ray_up_job.py"
    job.write_text(JOB)
    others = ray_processes(uid=head.user.uid, mine=False)
    print(f"other Ray instances' raylet/gcs_server pids: {sorted(others)}", file=sys.stderr)
    timings: dict[str, float] = {}

    def launcher(name: str, command: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        argv = [RAY, command, "--log-color", "false", *args]
        try:
            result = subprocess.run(
                argv,
                cwd=ROOT,
                env=head.launcher_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:  # a failure like any other: with its output and the logs
            out, err = (
                x.decode(errors="replace") if isinstance(x, bytes) else x or ""
                for x in (exc.stdout, exc.stderr)
            )
            result = subprocess.CompletedProcess(argv, -9, out, f"{err}\n(timed out after {timeout}s)")
        timings[name] = round(time.monotonic() - started, 1)
        print(f"$ ray {command} ... -> {result.returncode} in {timings[name]}s", file=sys.stderr)
        print(result.stdout[-2000:], result.stderr[-1000:], file=sys.stderr, sep="\n")
        return result

    def failed(result: subprocess.CompletedProcess[str]) -> str:
        return f"rc={result.returncode}\n{result.stdout[-5000:]}\n{result.stderr[-3000:]}\n{head.head_logs()}"

    try:
        up = launcher("ray up", "up", "-y", "--no-config-cache", str(config), timeout=900)
        assert up.returncode == 0, failed(up)
        assert ray_processes(uid=head.user.uid, mine=True), "no raylet runs as the ssh user"

        submit = launcher("ray submit", "submit", str(config), str(job), timeout=300)
        assert submit.returncode == 0, failed(submit)
        match = re.search(r"RAY_UP_RESULT (\{.*\})", submit.stdout)
        assert match, failed(submit)
        result = json.loads(match.group(1))
        assert result == {
            "gcs": f"127.0.0.1:{HEAD_PORT}",  # the launched head, not another Ray on the machine
            "cpus": 1.0,
            "alive_nodes": 1,
            "sum": 30,
            "task_users": [head.user.name],
            "driver_user": head.user.name,
        }, result

        # `ray status` reads the autoscaler's report, which the head's monitor writes a few seconds in.
        deadline = time.monotonic() + 180
        while True:
            status = launcher("ray exec", "exec", str(config), "ray status", timeout=120)
            report = status.stdout
            if status.returncode == 0 and re.search(r"/1\.0 CPU", report) and "local.cluster.node" in report:
                break
            assert time.monotonic() < deadline, failed(status)
            time.sleep(5)
    finally:
        down = launcher("ray down", "down", "-y", str(config), timeout=600)
        print(f"launcher timings (s): {timings}", file=sys.stderr)
    assert down.returncode == 0, failed(down)
    deadline = time.monotonic() + 60
    while ray_processes(uid=head.user.uid, mine=True) and time.monotonic() < deadline:
        time.sleep(1)
    assert not ray_processes(uid=head.user.uid, mine=True), "ray down left the head's raylet/GCS running"
    gone = set(others) - set(still_running(others))
    assert not gone, f"other Ray instances' raylet/gcs_server pids {sorted(gone)} ended during the test"
