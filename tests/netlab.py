"""A small network of hosts made of Linux network namespaces, for tests that need separate machines.

Every host is a namespace with one veth link to a bridge that lives in a namespace of its own (the
"switch"), so nothing is added to the machine's own network. Addresses come from a private /24 the test
chooses. `Lab.close` ends every process left in the lab's namespaces and deletes them (their links go
with them), also after a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def available() -> str | None:
    """None if labs can be built here, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    return None


def ensure_packages() -> None:
    """iproute2 and nftables from Debian, installed by the test itself when missing."""
    missing = [pkg for pkg, tool in (("iproute2", "ip"), ("nftables", "nft")) if shutil.which(tool) is None]
    if missing:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *missing], check=True, capture_output=True, timeout=600
        )


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Lab:
    subnet: str  # the first three octets, e.g. "10.213.7"
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address

    @property
    def switch(self) -> str:
        return f"rc{self.tag}-sw"

    def ns(self, host: str) -> str:
        return f"rc{self.tag}-{host}"

    def open(self) -> Lab:
        _ip("netns", "add", self.switch)
        _ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        _ip("link", "set", "br0", "up", ns=self.switch)
        return self

    def add_host(self, name: str, octet: int) -> str:
        ns, address = self.ns(name), f"{self.subnet}.{octet}"
        _ip("netns", "add", ns)
        # The pair is made inside the host's namespace, then one end moves to the switch: no link ever
        # appears in the machine's own namespace.
        _ip("link", "add", "eth0", "type", "veth", "peer", "name", f"p{octet}", ns=ns)
        _ip("link", "set", f"p{octet}", "netns", self.switch, ns=ns)
        _ip("link", "set", f"p{octet}", "master", "br0", ns=self.switch)
        _ip("link", "set", f"p{octet}", "up", ns=self.switch)
        _ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        _ip("link", "set", "eth0", "up", ns=ns)
        _ip("link", "set", "lo", "up", ns=ns)
        self.hosts[name] = address
        return address

    def argv(self, host: str, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *command]

    def run(
        self,
        host: str,
        *command: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        **kwargs: object,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(host, *command), env=env, capture_output=True, text=True, timeout=timeout, **kwargs
        )  # type: ignore[call-overload]

    def popen(self, host: str, *command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        handle = log.open("ab")
        return subprocess.Popen(
            self.argv(host, *command),
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self, host: str) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.ns(host)], capture_output=True, text=True, timeout=30
        )
        return [int(p) for p in out.stdout.split()]

    def close(self) -> list[str]:
        """End every process in the lab's namespaces, then delete them; returns what could not be done."""
        problems: list[str] = []
        names = [self.ns(h) for h in self.hosts] + [self.switch]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for host in self.hosts:
                for pid in self.pids(host):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(self.pids(h) for h in self.hosts):
                time.sleep(0.2)
        for name in names:
            result = subprocess.run(
                ["ip", "netns", "delete", name], capture_output=True, text=True, timeout=30
            )
            if result.returncode != 0 and "No such file" not in result.stderr:
                problems.append(f"{name}: {result.stderr.strip()}")
        return problems
