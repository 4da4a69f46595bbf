"""A throwaway sshd on loopback and a non-root login user for it, so the Ray cluster launcher (`ray up`) can
treat this machine as an on-prem head node. Used by tests/integration/test_ray_up.py; needs root and apt
(Debian/Ubuntu).

- packages: openssh-server (sshd), netcat-openbsd (the launcher's `ssh_proxy_command`: it has no ssh port
  setting), rsync (the launcher syncs its bootstrap files with it), acl (setfacl); installed only if missing,
  with service starts denied (policy-rc.d), so the package's own sshd on port 22 is never started;
- the user (`raychat-ci`, marked by its GECOS field so nobody else's account is touched): a login shell
  whose ~/.bashrc puts the project's venv first on PATH, ~/raychat a symlink to the repo (what the project's
  file_mounts would sync there), its own RAY_TMPDIR/TMPDIR (~/tmp), as a head machine has its own
  /tmp/ray, and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, so Ray keeps the loopback head address as given;
- traverse-only ACLs (`setfacl u:raychat-ci:--x`) on the directories between / and the repo and the venv's
  interpreter that the user cannot enter (here /root, mode 700, which holds the pyenv Python the venv links
  to), recorded and reverted exactly afterwards;
- an sshd of its own (config, host key, pid file and log in a temp dir; 127.0.0.1 only; keys only, this
  user only), stopped by its pid together with its session processes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from cluster import processes

USER = "raychat-ci"
MARKER = "raychat ray-up test user (tests/sshd.py)"
SSHD = Path("/usr/sbin/sshd")
# package -> the file it must provide
PACKAGES = {"openssh-server": str(SSHD), "netcat-openbsd": "nc", "rsync": "rsync", "acl": "setfacl"}
POLICY_RC = Path("/usr/sbin/policy-rc.d")


def run(argv: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _present(exe: str) -> bool:
    return Path(exe).is_file() if "/" in exe else shutil.which(exe) is not None


@contextmanager
def _no_service_starts() -> Iterator[None]:
    """Debian's standard switch: maintainer scripts do not start services while policy-rc.d exits 101."""
    if POLICY_RC.exists():
        yield
        return
    POLICY_RC.write_text("#!/bin/sh\n# tests/sshd.py: no service starts during apt-get install\nexit 101\n")
    POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC.unlink(missing_ok=True)


def ensure_packages() -> list[str]:
    """apt-get install what is missing; returns the packages installed."""
    missing = [pkg for pkg, exe in PACKAGES.items() if not _present(exe)]
    if not missing:
        return []
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    with _no_service_starts():
        if subprocess.run(install, capture_output=True, text=True, timeout=900, env=env).returncode != 0:
            run(["apt-get", "update", "-q"], timeout=600, env=env)  # a fresh machine: no package lists yet
            run(install, timeout=900, env=env)
    still = [pkg for pkg, exe in PACKAGES.items() if not _present(exe)]
    if still:
        raise RuntimeError(f"apt-get install did not provide {still}")
    return missing


@dataclass
class LoginUser:
    name: str
    uid: int
    gid: int
    home: Path

    def can_traverse(self, directory: Path) -> bool:
        probe = subprocess.run(
            ["test", "-x", str(directory)], user=self.uid, group=self.gid, extra_groups=[], timeout=30
        )
        return probe.returncode == 0

    def processes(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["uids"]):
            uids = proc.info["uids"]
            if uids is not None and self.uid in (uids.real, uids.effective):
                found.append(proc)
        return found


def _own(path: Path, user: LoginUser, mode: int) -> None:
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)


def ensure_user(root: Path, public_key: str) -> LoginUser:
    """The test's login user, created if missing; its dotfiles, key and ~/raychat are (re)written."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment", MARKER, USER])
        entry = pwd.getpwnam(USER)
    if entry.pw_gecos != MARKER:
        raise RuntimeError(f"a user {USER!r} exists that this test did not create (GECOS {entry.pw_gecos!r})")
    # useradd leaves the password '!' (locked), and sshd without PAM refuses locked accounts even with a key;
    # '*' is "no password" without the lock.
    run(["usermod", "--password", "*", USER])
    user = LoginUser(USER, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    home = user.home
    venv_bin = root / ".venv" / "bin"
    bashrc = (
        "# Written by tests/sshd.py: the shells the Ray cluster launcher opens find the project's venv, and\n"
        "# Ray keeps its temp dir (ray_current_cluster, the local provider's state) to this user, as on a\n"
        "# head machine of its own.\n"
        f'export PATH="{venv_bin}:$PATH"\n'
        'export RAY_TMPDIR="$HOME/tmp" TMPDIR="$HOME/tmp"\n'
        "# The head binds 127.0.0.1; without this Ray 'resolves' 127.0.0.1 in an address (ray.init,\n"
        "# ray status) to the machine's own IP, where nothing listens, and retries forever; as in\n"
        "# cluster/ray_node.py.\n"
        "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0\n"
    )
    for name, text in ((".bashrc", bashrc), (".profile", '. "$HOME/.bashrc"\n')):
        (home / name).write_text(text)
        _own(home / name, user, 0o644)
    (home / "tmp").mkdir(exist_ok=True)
    _own(home / "tmp", user, 0o700)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    _own(ssh_dir, user, 0o700)
    (ssh_dir / "authorized_keys").write_text(public_key.strip() + "\n")
    _own(ssh_dir / "authorized_keys", user, 0o600)
    link = home / "raychat"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(root, target_is_directory=True)
    os.lchown(link, user.uid, user.gid)
    return user


def remove_user(user: LoginUser) -> None:
    """userdel -r, once the user has no processes left; the repo symlink goes first (never followed)."""
    entry = pwd.getpwnam(user.name)
    if entry.pw_gecos != MARKER:
        return
    (user.home / "raychat").unlink(missing_ok=True)
    run(["userdel", "--remove", user.name])


def stop_processes(procs: list[psutil.Process], wait_s: float = 20) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL after wait_s, to exactly these processes (by pid); returns the survivors."""
    return processes.end_processes(procs, grace_s=wait_s)


@dataclass
class TraverseGrants:
    """Search-only ACL entries for the user on the directories it cannot enter, reverted exactly."""

    user: LoginUser
    granted: list[tuple[Path, int, bool]] = field(default_factory=list)  # (dir, st_mode, had an ACL)

    def grant_for(self, *targets: Path) -> None:
        for target in targets:
            dirs = [*reversed(target.parents), *([target] if target.is_dir() else [])]
            for directory in dirs:  # top-down: a grant on /root lets the check below it see past /root
                if any(directory == done for done, _, _ in self.granted) or self.user.can_traverse(directory):
                    continue
                acl = run(["getfacl", "--absolute-names", "--skip-base", str(directory)]).stdout
                had_acl = any(line and not line.startswith("#") for line in acl.splitlines())
                mode = directory.stat().st_mode
                run(["setfacl", "-m", f"u:{self.user.name}:--x", str(directory)])
                self.granted.append((directory, mode, had_acl))
                if not self.user.can_traverse(directory):
                    raise RuntimeError(f"{self.user.name} still cannot enter {directory} after setfacl")

    def revoke(self) -> None:
        while self.granted:
            directory, mode, had_acl = self.granted.pop()
            if had_acl:
                run(["setfacl", "-x", f"u:{self.user.name}", str(directory)])
            else:
                run(["setfacl", "-b", str(directory)])
            directory.chmod(stat.S_IMODE(mode))


def free_port(preferred: int, tries: int = 50) -> int:
    for port in range(preferred, preferred + tries):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {preferred}..{preferred + tries - 1}")


def keygen(path: Path, comment: str) -> Path:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path


class Sshd:
    """`sshd -D -e` with a config of its own in `workdir`, for one user, on 127.0.0.1:port."""

    def __init__(self, workdir: Path, user: str, port: int) -> None:
        self.workdir, self.user, self.port = workdir, user, port
        self.config = workdir / "sshd_config"
        self.log = workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Sshd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        host_key = keygen(self.workdir / "ssh_host_ed25519_key", "raychat-test-host")
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            "AuthorizedKeysFile .ssh/authorized_keys\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin no\n"
            f"AllowUsers {self.user}\n"
            "UsePAM no\n"
            "StrictModes yes\n"
            "AllowAgentForwarding no\n"
            "AllowTcpForwarding no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            # The launcher multiplexes its commands over one connection (ControlMaster).
            "MaxSessions 30\n"
            "MaxStartups 30:30:60\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        run([str(SSHD), "-t", "-f", str(self.config)])
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({self.proc.returncode}):\n{self.log_tail()}")
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd did not listen on {self.port} within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        """The listener by its pid, then whatever sessions it forked (its children) that are still there."""
        if self.proc is None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        stop_processes(children, wait_s=5)
        self.proc = None


def ssh_argv(key: Path, user: str, port: int, *, proxy: bool = False) -> list[str]:
    """ssh to the test sshd: with `-p`, or (proxy=True) through `nc` as the launcher does."""
    options = ["BatchMode=yes", "IdentitiesOnly=yes", "StrictHostKeyChecking=no", "LogLevel=ERROR"]
    options += [f"UserKnownHostsFile={os.devnull}", "ConnectTimeout=20"]
    if proxy:
        options.append(f"ProxyCommand=nc 127.0.0.1 {port}")
    argv = ["ssh", "-i", str(key), *(x for option in options for x in ("-o", option))]
    return [*argv, *([] if proxy else ["-p", str(port)]), f"{user}@127.0.0.1"]
