"""Every plane locked, proven on real networks: four hosts made of network namespaces (a client, an edge, a
Ray head, a Ray worker) on a bridge, with the firewall rules `raychat firewall` renders applied on each.

The head runs Ray (token auth, TLS on its gRPC channels), Redis and the gateway; the worker joins with the
token and runs the LLM replica (it alone declares a GPU); the edge runs Nginx with HTTPS and mTLS to Serve.
Needs the host to itself, so it stops the shared stack first and runs last (`restarts_stack`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import conftest, netlab
from tests.conftest import ROOT, TEST_ENV, Stack

PYTHON = str(Path(sys.executable))
RAYCHAT = str(Path(sys.executable).parent / "raychat")
RAY = str(Path(sys.executable).parent / "ray")
SUBNET = "10.213.77"
CLIENT, EDGE, HEAD, WORKER = (f"{SUBNET}.{n}" for n in (10, 20, 30, 40))
GCS = int(TEST_ENV["RAYCHAT_RAY__PORT"])
DASHBOARD = int(TEST_ENV["RAYCHAT_RAY__DASHBOARD_PORT"])
SERVE = int(TEST_ENV["RAYCHAT_SERVE__PORT"])
HTTPS = int(TEST_ENV["RAYCHAT_INGRESS__NGINX_HTTPS_PORT"])
HTTP = int(TEST_ENV["RAYCHAT_INGRESS__NGINX_PORT"])
OUTSIDE_PORT = 28999  # a listener on the client: somewhere outside the cluster

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("open")
except OSError as exc:
    print("closed", type(exc).__name__)
"""

SCAN = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
targets = json.loads(sys.argv[1])
def probe(t):
    try:
        socket.create_connection((t[0], t[1]), timeout=1.5).close()
        return t, True
    except OSError:
        return t, False
with ThreadPoolExecutor(32) as pool:
    print(json.dumps([[h, p] for (h, p), ok in pool.map(probe, targets) if ok]))
"""

CHAT = """
import httpx, openai, sys
url, key, ca, model = sys.argv[1:5]
http = httpx.Client(verify=ca)
client = openai.OpenAI(base_url=url, api_key=key, http_client=http, max_retries=0, timeout=300)
stream = client.chat.completions.create(model=model, stream=True, max_tokens=8,
    messages=[{"role": "user", "content": "Say hello."}])
chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
print(len(chunks), repr("".join(chunks)))
"""

SERVE_TLS = """
import httpx, ssl, sys
url, ca, cert, key = sys.argv[1:5]
bare = ssl.create_default_context(cafile=ca)
try:
    status = httpx.get(url, verify=bare, timeout=10).status_code
    print("without certificate:", status)
except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
    print("without certificate: refused", type(exc).__name__)
with_cert = ssl.create_default_context(cafile=ca)
with_cert.load_cert_chain(cert, key)
print("with certificate:", httpx.get(url, verify=with_cert, timeout=10).status_code)
"""


def lab_env(data_dir: Path, host: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in conftest.test_env().items()
        if not k.startswith(("RAY_AUTH", "RAY_TLS", "RAY_USE_TLS"))
    }
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # real addresses here, not loopback
    env.update(
        {
            "RAYCHAT_DATA_DIR": str(data_dir),
            "RAYCHAT_RAY__HOST": host,
            "RAYCHAT_SERVE__HOST": HEAD,
            "RAYCHAT_RAY__NUM_GPUS": "0",
            "RAYCHAT_RAY__USE_TLS": "true",
            "RAYCHAT_INGRESS__KIND": "none",
            "RAYCHAT_INGRESS__HOST": EDGE,
            "RAYCHAT_INGRESS__UPSTREAMS": json.dumps([f"{HEAD}:{SERVE}"]),
            "RAYCHAT_TLS__HOSTNAMES": json.dumps([EDGE]),
            "RAYCHAT_FIREWALL__CLUSTER_ADDRESSES": json.dumps([EDGE, HEAD, WORKER]),
            "RAYCHAT_FIREWALL__CLIENT_NETWORKS": json.dumps([f"{CLIENT}/32"]),
            # The LLM replica asks for a GPU, which only the worker declares: it runs there.
            "RAYCHAT_LLM__ENGINE_BUNDLE_RESOURCES": '{"GPU": 1.0}',
            "RAYCHAT_LLM__MIN_REPLICAS": "1",
            "RAYCHAT_LLM__MAX_REPLICAS": "1",
            "RAYCHAT_LLM__CPU_KVCACHE_SPACE_GIB": "1",
            "RAYCHAT_GATEWAY__NUM_REPLICAS": "1",
        }
    )
    return env


@pytest.fixture
def lab() -> Iterator[netlab.Lab]:
    reason = netlab.available()
    if reason:
        pytest.skip(reason)
    netlab.ensure_packages()
    network = netlab.Lab(SUBNET).open()
    try:
        for name, address in (("client", CLIENT), ("edge", EDGE), ("head", HEAD), ("worker", WORKER)):
            network.add_host(name, int(address.rsplit(".", 1)[1]))
        yield network
    finally:
        problems = network.close()
        assert not problems, problems
        assert not any(ns.startswith(f"rc{network.tag}") for ns in _namespaces()), _namespaces()


def _namespaces() -> list[str]:
    return [line.split()[0] for line in os.popen("ip netns list").read().splitlines() if line.strip()]


def _listening(lab: netlab.Lab, host: str) -> set[int]:
    """TCP ports a host listens on anywhere but loopback (what a neighbour could try)."""
    out = lab.run(host, "ss", "-ltnH").stdout
    ports = set()
    for line in out.splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        if not address.startswith(("127.", "[::1]")):
            ports.add(int(port))
    return ports


def _connect(lab: netlab.Lab, host: str, address: str, port: int, timeout: float = 3) -> str:
    return lab.run(host, PYTHON, "-c", CONNECT, address, str(port), str(timeout)).stdout.strip()


@pytest.mark.restarts_stack
@pytest.mark.timeout(1800)
def test_each_plane_holds_across_hosts(stack: Stack, lab: netlab.Lab, tmp_path: Path) -> None:
    assert stack.raychat("down", timeout=180).returncode == 0  # the host to this scenario alone
    data = ROOT / ".test-data" / "netns"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    for shared in ("models", "cache"):  # the converted model and compiled kernels of the shared stack
        (data / shared).symlink_to(ROOT / ".test-data" / shared)
    seen: dict[str, Any] = {}  # what the test observed, kept in .test-data/logs/netns-test.json
    head_env, worker_env = lab_env(data, HEAD), lab_env(data, WORKER)
    edge_env = {**lab_env(data, EDGE), "RAYCHAT_INGRESS__KIND": "nginx"}
    logs = tmp_path

    # Somewhere outside the cluster, reachable before the rules: the worker's refusal later is theirs.
    lab.popen(
        "client",
        PYTHON,
        "-m",
        "http.server",
        "-b",
        CLIENT,
        str(OUTSIDE_PORT),
        env=head_env,
        log=logs / "outside.log",
    )
    deadline = time.monotonic() + 20
    while _connect(lab, "worker", CLIENT, OUTSIDE_PORT) != "open":
        assert time.monotonic() < deadline, "the outside listener never answered"
        time.sleep(0.3)

    up = lab.popen("head", RAYCHAT, "up", env=head_env, log=logs / "up.log")
    try:
        deadline = time.monotonic() + 300
        while _connect(lab, "worker", HEAD, GCS, timeout=1) != "open":
            assert up.poll() is None, (logs / "up.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (logs / "up.log").read_text()[-4000:]
            time.sleep(1)
        joined = lab.run(
            "worker",
            RAYCHAT,
            "join",
            "--address",
            f"{HEAD}:{GCS}",
            "--name",
            "w1",
            "--num-gpus",
            "1",
            "--num-cpus",
            "4",
            env=worker_env,
            timeout=240,
        )
        assert joined.returncode == 0, joined.stdout[-3000:] + joined.stderr[-3000:]
        assert up.wait(timeout=900) == 0, (logs / "up.log").read_text()[-6000:]
        edge_up = lab.run("edge", RAYCHAT, "ingress", "start", env=edge_env, timeout=120)
        assert edge_up.returncode == 0, edge_up.stdout + edge_up.stderr

        for host, role, env in (
            ("edge", "edge", edge_env),
            ("head", "head", head_env),
            ("worker", "worker", worker_env),
        ):
            applied = lab.run(host, RAYCHAT, "firewall", "--role", role, "--apply", env=env)
            assert applied.returncode == 0, (role, applied.stdout, applied.stderr)

        # 1. From the client only the HTTPS port answers: every port any host listens on was tried.
        targets = [
            [address, port]
            for host, address in (("edge", EDGE), ("head", HEAD), ("worker", WORKER))
            for port in _listening(lab, host)
        ]
        assert [HEAD, GCS] in targets and [HEAD, DASHBOARD] in targets and [HEAD, SERVE] in targets, targets
        assert len([t for t in targets if t[0] == WORKER]) >= 3, (
            targets
        )  # raylet, object manager, replica gRPC
        scan = lab.run("client", PYTHON, "-c", SCAN, json.dumps(targets), timeout=300)
        seen["scanned"], seen["open_to_client"] = sorted(map(tuple, targets)), json.loads(scan.stdout)
        assert json.loads(scan.stdout) == [[EDGE, HTTPS]], (scan.stdout, scan.stderr)
        assert _connect(lab, "client", EDGE, HTTP) != "open"  # plain HTTP is not for clients either

        # 2. A streamed chat from the client through the edge reaches the replica on the worker.
        key = (data / "secrets" / "admin.key").read_text().strip()
        model = head_env.get("RAYCHAT_LLM__MODEL_ID", "smollm2-135m-instruct")
        chat = lab.run(
            "client",
            PYTHON,
            "-c",
            CHAT,
            f"https://{EDGE}:{HTTPS}/v1",
            key,
            str(data / "tls" / "ca.crt"),
            model,
            env=head_env,
            timeout=300,
        )
        assert chat.returncode == 0, chat.stderr[-3000:]
        seen["chat"] = chat.stdout.strip()
        assert int(chat.stdout.split()[0]) >= 2, chat.stdout
        placed = {node["node"]: node["replicas"] for node in _status(lab, head_env)["nodes"] if node["alive"]}
        assert any(dep.startswith("LLM") for dep in placed[WORKER]), placed
        seen["replicas_per_node"] = placed
        assert not any(dep.startswith("LLM") for dep in placed[HEAD]), placed

        # 3. Ray's planes: the Jobs API wants the token; a raylet without it does not join.
        token = (data / "secrets" / "ray.token").read_text().strip()
        jobs = f"http://{HEAD}:{DASHBOARD}/api/jobs/"
        anonymous = lab.run("worker", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", jobs)
        assert anonymous.stdout == "401", anonymous.stdout
        authorization = f"Authorization: Bearer {token}"
        bearer = lab.run(
            "worker", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", authorization, jobs
        )
        seen["jobs_api"] = {"without_token": anonymous.stdout, "with_token": bearer.stdout}
        assert bearer.stdout == "200", bearer.stdout
        # The intruder speaks Ray's TLS (it has the certificates) but has no token.
        tls_dir = data / "tls"
        intruder_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYCHAT_"))}
        intruder_env.update(
            RAY_USE_TLS="1",
            RAY_TLS_SERVER_CERT=str(tls_dir / "ray-node.crt"),
            RAY_TLS_SERVER_KEY=str(tls_dir / "ray-node.key"),
            RAY_TLS_CA_CERT=str(tls_dir / "ca.crt"),
            RAY_USAGE_STATS_ENABLED="0",
        )
        argv = [
            RAY,
            "start",
            "--address",
            f"{HEAD}:{GCS}",
            "--node-ip-address",
            WORKER,
            "--num-cpus",
            "1",
            "--temp-dir",
            str(tmp_path / "intruder"),
            "--disable-usage-stats",
        ]
        try:
            intruder = lab.run("worker", *argv, env=intruder_env, timeout=45)
            said = intruder.stdout + intruder.stderr
            seen["intruder"] = {"returncode": intruder.returncode, "said": said[-600:]}
            assert intruder.returncode != 0, said[-3000:]
            assert re.search(r"auth|token|unauthenticated|unauthorized", said, re.I), said[-3000:]
        except subprocess.TimeoutExpired:
            pass  # still knocking when its time ran out: what matters is that it never joined
        # (Whatever it left running ends with the lab: `ray stop` would end every Ray node of this host.)
        alive = sorted(node["node"] for node in _status(lab, head_env)["nodes"] if node["alive"])
        assert alive == [HEAD, WORKER], alive
        gcs_pid = next(int(p) for p in lab.pids("head") if "gcs_server" in _cmdline(int(p)))
        environ = Path(f"/proc/{gcs_pid}/environ").read_bytes().split(b"\0")
        assert b"RAY_USE_TLS=1" in environ and b"RAY_AUTH_MODE=token" in environ

        # 4. Serve's port: a client certificate from raychat's CA, or nothing.
        tls_dir = data / "tls"
        probe = lab.run(
            "edge",
            PYTHON,
            "-c",
            SERVE_TLS,
            f"https://{HEAD}:{SERVE}/healthz",
            str(tls_dir / "ca.crt"),
            str(tls_dir / "ingress-client.crt"),
            str(tls_dir / "ingress-client.key"),
            env=head_env,
        )
        seen["serve_port"] = probe.stdout.strip().splitlines()
        assert "without certificate: refused" in probe.stdout, probe.stdout + probe.stderr
        assert "with certificate: 200" in probe.stdout, probe.stdout + probe.stderr

        # 5. The worker opens nothing outside the cluster's addresses.
        seen["worker_to_outside"] = _connect(lab, "worker", CLIENT, OUTSIDE_PORT)
        assert seen["worker_to_outside"] != "open"
    finally:
        (ROOT / ".test-data" / "logs" / "netns-test.json").write_text(json.dumps(seen, indent=2))
        lab.run("head", RAYCHAT, "down", env=head_env, timeout=180)
        lab.run("worker", RAYCHAT, "leave", "w1", env=worker_env, timeout=120)
        if up.poll() is None:
            up.kill()


def _status(lab: netlab.Lab, env: dict[str, str]) -> dict[str, Any]:
    status = lab.run("head", RAYCHAT, "status", env=env)
    assert status.returncode == 0, status.stderr[-3000:]
    return json.loads(status.stdout)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
