"""`raychat firewall`: the rules rendered per role, checked by nft itself, loaded for real in a throwaway
network namespace (replaced, removed, other tables untouched); the Kubernetes NetworkPolicies as described."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import cli, firewall, local
from cluster.firewall import Destination, FirewallConfigError, FirewallError
from cluster.settings import RaychatSettings, load_settings

K8S_POLICIES = Path(firewall.__file__).parent.parent / "k8s" / "networkpolicies.yaml"
HAVE_NFT = shutil.which("nft") is not None
IS_ROOT = os.geteuid() == 0
# `make test` installs the Debian package nftables so these run; elsewhere they say why they skip.
needs_nft = pytest.mark.skipif(
    not (HAVE_NFT and IS_ROOT), reason="needs nft (apt-get install nftables) and root"
)


pytestmark = pytest.mark.usefixtures("clean_settings_env")


def settings(**sections: Any) -> RaychatSettings:
    return RaychatSettings(**sections)


# --- allowed_outbound entries -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "network", "port", "protocol", "match"),
    [
        (
            "10.0.0.53:53",
            "10.0.0.53/32",
            53,
            None,
            "ip daddr 10.0.0.53 meta l4proto { tcp, udp } th dport 53",
        ),
        ("10.0.0.53:53/udp", "10.0.0.53/32", 53, "udp", "ip daddr 10.0.0.53 udp dport 53"),
        ("10.0.0.0/8", "10.0.0.0/8", None, None, "ip daddr 10.0.0.0/8"),
        ("10.1.2.3/16:443/TCP", "10.1.0.0/16", 443, "tcp", "ip daddr 10.1.0.0/16 tcp dport 443"),
        ("192.0.2.1/udp", "192.0.2.1/32", None, "udp", "ip daddr 192.0.2.1 meta l4proto udp"),
        ("2001:db8::/32", "2001:db8::/32", None, None, "ip6 daddr 2001:db8::/32"),
        ("[2001:db8::1]:443/tcp", "2001:db8::1/128", 443, "tcp", "ip6 daddr 2001:db8::1 tcp dport 443"),
        ("[2001:db8::/48]:123/udp", "2001:db8::/48", 123, "udp", "ip6 daddr 2001:db8::/48 udp dport 123"),
    ],
)
def test_outbound_entries_parse(
    entry: str, network: str, port: int | None, protocol: str | None, match: str
) -> None:
    dest = Destination.parse(entry, "firewall.allowed_outbound[0]")
    assert dest.network == ipaddress.ip_network(network)
    assert (dest.port, dest.protocol) == (port, protocol)
    assert dest.match() == match


@pytest.mark.parametrize(
    "entry",
    [
        "10.0.0.300",
        "mirror.example:443",
        "10.0.0.1:0",
        "10.0.0.1:70000",
        "10.0.0.1:https",
        "[2001:db8::1:443",
        "[2001:db8::1]443",
        "10.0.0.1/tcp/udp",
        "10.0.0.0/33",
        "",
    ],
)
def test_malformed_outbound_entry_names_its_index(entry: str) -> None:
    s = settings(firewall={"allowed_outbound": ["10.0.0.53:53/udp", entry]})
    with pytest.raises(FirewallConfigError, match=r"firewall\.allowed_outbound\[1\]"):
        firewall.render(s, "head")


def test_malformed_addresses_name_their_field() -> None:
    with pytest.raises(FirewallConfigError, match=r"firewall\.cluster_addresses\[0\]"):
        firewall.render(settings(firewall={"cluster_addresses": ["10.0.0.x"]}), "worker")
    with pytest.raises(FirewallConfigError, match=r"firewall\.client_networks\[1\]"):
        firewall.render(settings(firewall={"client_networks": ["0.0.0.0/0", "nope"]}), "edge")
    with pytest.raises(FirewallConfigError, match="role"):
        firewall.render(settings(), "gateway")


# --- the rendered policy ------------------------------------------------------------------------


def chain(text: str, name: str) -> str:
    start = text.index(f"\tchain {name} {{")
    return text[start : text.index("\n\t}", start)]


def test_head_default_drops_everything_but_loopback_replies_and_the_cluster() -> None:
    text = firewall.render(load_settings(), "head")
    assert text.startswith("#!/usr/sbin/nft -f")
    # Replaces its own table in one transaction, and names no other.
    assert "table inet raychat\ndelete table inet raychat\n\ntable inet raychat {" in text
    firewall.check_own_table(text, "raychat")
    inbound, outbound = chain(text, "input"), chain(text, "output")
    assert "type filter hook input priority filter; policy drop;" in inbound
    assert "type filter hook output priority filter; policy drop;" in outbound
    assert 'iif "lo" accept' in inbound and 'oif "lo" accept' in outbound
    assert (
        "ct state established,related accept" in inbound and "ct state established,related accept" in outbound
    )
    assert "ip saddr @cluster_v4 accept" in inbound and "ip6 saddr @cluster_v6 accept" in inbound
    assert "ip daddr @cluster_v4 accept" in outbound and "ip6 daddr @cluster_v6 accept" in outbound
    assert "dport" not in inbound  # no port is open to anyone else
    assert 'log prefix "raychat-drop-out "' in outbound and "limit rate" in outbound
    assert "elements = { 127.0.0.1 }" in text  # ray.host
    worker = firewall.render(load_settings(), "worker")
    assert worker.replace("role worker", "role head") == text  # the same policy


def test_render_is_pure_and_stable() -> None:
    s = settings(firewall={"cluster_addresses": ["10.0.0.2", "10.0.0.1"]})
    assert firewall.render(s, "edge") == firewall.render(s, "edge")


def test_cluster_addresses_are_deduped_split_by_family_and_merged() -> None:
    s = settings(
        firewall={"cluster_addresses": ["10.0.0.0/24", "10.0.0.7", "fd00::1", "fd00::1", "10.0.1.0/24"]},
        ray={"host": "10.0.0.7", "address": "[fd00::2]:6380"},
        serve={"host": "127.0.0.1"},  # loopback: the lo rule covers it
        redis={"url": "redis://192.0.2.10:6379/0"},
        ingress={"upstreams": ["198.51.100.4:8000", "serve.example:8001"]},
    )
    p = firewall.plan(s, "head")
    assert p.cluster.v4 == (
        ipaddress.IPv4Network("10.0.0.0/23"),
        ipaddress.IPv4Network("192.0.2.10/32"),
        ipaddress.IPv4Network("198.51.100.4/32"),
    )
    assert p.cluster.v6 == (ipaddress.IPv6Network("fd00::1/128"), ipaddress.IPv6Network("fd00::2/128"))
    text = firewall.render(s, "head")
    assert "elements = { 10.0.0.0/23, 192.0.2.10, 198.51.100.4 }" in text
    assert "elements = { fd00::1, fd00::2 }" in text
    # A host name cannot go into a set: the text says so instead of silently leaving it out.
    assert "# NOTE: ingress.upstreams[1] host 'serve.example' is a name" in text
    # The edge reaches every Serve proxy port it was given.
    assert "ip daddr @cluster_v4 tcp dport { 8000, 8001 } accept" in firewall.render(s, "edge")


def test_unspecified_bind_address_is_not_a_member() -> None:
    p = firewall.plan(settings(ray={"host": "0.0.0.0"}), "head")
    assert p.cluster.v4 == () and any("binds every interface" in n for n in p.notes)


@pytest.mark.parametrize(
    ("kind", "ports"),
    [
        ("nginx", "8443"),
        ("traefik", "8444"),
        ("both", "{ 8443, 8444 }"),
    ],
)
def test_edge_opens_the_ingress_ports_to_client_networks_only(kind: str, ports: str) -> None:
    s = settings(
        ingress={"kind": kind},
        firewall={
            "client_networks": ["203.0.113.0/24", "2001:db8:1::/48"],
            "cluster_addresses": ["10.0.0.5"],
        },
    )
    text = firewall.render(s, "edge")
    inbound, outbound = chain(text, "input"), chain(text, "output")
    assert f"ip saddr @clients_v4 tcp dport {ports} accept" in inbound
    assert f"ip6 saddr @clients_v6 tcp dport {ports} accept" in inbound
    assert "elements = { 203.0.113.0/24 }" in text and "elements = { 2001:db8:1::/48 }" in text
    assert "@cluster_v4 accept" not in inbound  # the cluster gets nothing special at the edge
    # only the Serve proxy and the Gateway replicas' own ports (direct ingress)
    serve_ports = ", ".join(str(p) for p in [8000, *range(30000, 30008)])
    assert f"ip daddr @cluster_v4 tcp dport {{ {serve_ports} }} accept" in outbound
    assert "ip daddr @cluster_v4 accept" not in outbound
    assert 'log prefix "raychat-drop-out "' in outbound


def test_edge_without_ingress_opens_nothing() -> None:
    text = firewall.render(settings(ingress={"kind": "none"}), "edge")
    assert "dport" not in chain(text, "input")
    assert "# NOTE: ingress.kind is none" in text


def test_allowed_outbound_in_the_output_chain_with_its_index() -> None:
    s = settings(firewall={"allowed_outbound": ["10.0.0.53:53", "[2001:db8::1]:443/tcp"]})
    for role in firewall.ROLES:
        outbound = chain(firewall.render(s, role), "output")
        dns = "ip daddr 10.0.0.53 meta l4proto { tcp, udp } th dport 53 accept"
        assert f'{dns} comment "firewall.allowed_outbound[0]"' in outbound
        assert 'ip6 daddr 2001:db8::1 tcp dport 443 accept comment "firewall.allowed_outbound[1]"' in outbound
        # accepted before the logged drop
        assert outbound.index("allowed_outbound[1]") < outbound.index("raychat-drop-out")


def test_own_table_name_from_the_settings() -> None:
    text = firewall.render(settings(firewall={"table": "rc_prod"}), "worker")
    assert "table inet rc_prod {" in text and "raychat {" not in text
    with pytest.raises(FirewallConfigError, match="firewall.table"):
        firewall.render(settings(firewall={"table": "9lives"}), "worker")


@pytest.mark.parametrize(
    "script",
    [
        "flush ruleset\n",
        "table inet raychat {\n}\ntable inet filter {\n}\n",
        "delete table ip nat\n",
        "add rule inet filter input accept\n",
        'include "/etc/nftables.conf"\n',
    ],
)
def test_apply_refuses_scripts_outside_its_table(script: str) -> None:
    with pytest.raises(FirewallError, match="outside table inet raychat"):
        firewall.apply(script, "raychat")


def test_own_table_check_ignores_comments_and_strings() -> None:
    script = '# flush ruleset\ntable inet raychat {\n\tchain c { comment "table inet x; flush ruleset" }\n}\n'
    firewall.check_own_table(script, "raychat")


def test_missing_nft_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firewall.nft.shutil, "which", lambda name: None)
    monkeypatch.setattr(firewall.nft.os, "geteuid", lambda: 0)
    with pytest.raises(FirewallError, match="apt-get install nftables"):
        firewall.apply(firewall.render(load_settings(), "head"), "raychat")


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firewall.nft.os, "geteuid", lambda: 1000)
    with pytest.raises(FirewallError, match="needs root"):
        firewall.apply(firewall.render(load_settings(), "head"), "raychat")
    with pytest.raises(FirewallError, match="needs root"):
        firewall.remove("raychat")


def test_cli_prints_the_rules(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(local, "export_environment", lambda settings: None)
    assert cli.main(["firewall", "--role", "edge"]) == 0
    assert "table inet raychat {" in capsys.readouterr().out
    assert cli.main(["firewall"]) == 2
    assert "--role" in capsys.readouterr().err
    Path("raychat.yaml").write_text("firewall:\n  allowed_outbound: ['10.0.0.1:99999']\n")
    assert cli.main(["firewall", "--role", "head"]) == 2
    assert "firewall.allowed_outbound[0]" in capsys.readouterr().err


# --- nft itself ---------------------------------------------------------------------------------

VARIANTS: list[dict[str, Any]] = [
    {},
    {
        "ingress": {"kind": "both", "upstreams": ["10.0.0.2:8000", "[fd00::2]:8001"]},
        "ray": {"host": "10.0.0.1", "address": "10.0.0.1:6380"},
        "redis": {"url": "redis://10.0.0.3:6379/0"},
        "firewall": {
            "client_networks": ["198.51.100.0/24", "198.51.100.7", "2001:db8::/32"],
            "cluster_addresses": ["10.0.0.0/28", "fd00::/64", "fd00::5"],
            "allowed_outbound": [
                "10.9.0.53:53",
                "10.9.0.123:123/udp",
                "[2001:db8::1]:443/tcp",
                "192.0.2.0/24",
            ],
            "table": "rc_test",
        },
    },
    {"ingress": {"kind": "none"}, "firewall": {"client_networks": []}},
]


@needs_nft
@pytest.mark.parametrize("role", firewall.ROLES)
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_nft_accepts_the_rendered_rules(role: str, variant: int, tmp_path: Path) -> None:
    path = tmp_path / f"{role}.nft"
    path.write_text(firewall.render(settings(**VARIANTS[variant]), role))
    # -c: parse and check against the kernel, commit nothing.
    result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def netns() -> Iterator[tuple[str, ...]]:
    """A throwaway network namespace: rules loaded there never touch this host's."""
    if not (HAVE_NFT and IS_ROOT and shutil.which("ip")):
        pytest.skip("needs nft (apt-get install nftables), ip (iproute2) and root")
    name = f"rc-fw-test-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        yield ("ip", "netns", "exec", name, "nft")
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def nft_in(ns: tuple[str, ...], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([*ns, *args], input=stdin, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_apply_replace_and_remove_in_a_namespace(netns: tuple[str, ...]) -> None:
    # Someone else's table, which raychat must leave alone.
    nft_in(
        netns,
        "-f",
        "-",
        stdin="table inet site {\n\tchain input {\n\t\ttype filter hook input priority 0;\n\t}\n}\n",
    )
    foreign = nft_in(netns, "list", "table", "inet", "site")

    first = firewall.render(settings(firewall={"cluster_addresses": ["10.0.0.0/24"]}), "worker")
    report = firewall.apply(first, "raychat", nft=netns)
    assert "was not loaded; created it" in report
    assert "chain input: hook input, policy drop, 6 rules" in report
    assert "set cluster_v4: 2 elements" in report  # 10.0.0.0/24 and ray.host
    assert "10.0.0.0/24" in nft_in(netns, "list", "table", "inet", "raychat")

    # Loading again replaces the table (no duplicate rules), and reports what was there.
    second = firewall.render(
        settings(firewall={"cluster_addresses": ["10.0.1.0/24"], "allowed_outbound": ["10.9.0.53:53/udp"]}),
        "worker",
    )
    report = firewall.apply(second, "raychat", nft=netns)
    assert report.startswith("replaced the previous table inet raychat:") and "10.0.0.0/24" in report
    assert "chain output: hook output, policy drop, 9 rules" in report
    listing = nft_in(netns, "list", "table", "inet", "raychat")
    assert "10.0.1.0/24" in listing and "10.0.0.0/24" not in listing
    assert listing.count("chain input {") == 1

    # A ruleset nft refuses changes nothing.
    with pytest.raises(FirewallError, match="nothing was changed"):
        firewall.apply(second.replace("policy drop;", "policy bogus;"), "raychat", nft=netns)
    assert nft_in(netns, "list", "table", "inet", "raychat") == listing

    assert firewall.remove("raychat", nft=netns).startswith("removed table inet raychat:")
    assert "was not loaded" in firewall.remove("raychat", nft=netns)
    ruleset = nft_in(netns, "list", "ruleset")
    assert "raychat" not in ruleset
    assert nft_in(netns, "list", "table", "inet", "site") == foreign


# --- Kubernetes ---------------------------------------------------------------------------------

RAY_PODS = {
    "matchExpressions": [
        {"key": "ray.io/cluster", "operator": "Exists"},
        {"key": "ray.io/node-type", "operator": "In", "values": ["head", "worker"]},
    ]
}
INGRESS_PODS = {"matchLabels": {"app.kubernetes.io/component": "raychat-ingress"}}
REDIS_PODS = {"matchLabels": {"app.kubernetes.io/component": "raychat-redis"}}
DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


@pytest.fixture(scope="module")
def policies() -> dict[str, dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(K8S_POLICIES.read_text()) if doc is not None]
    for doc in docs:
        assert doc["apiVersion"] == "networking.k8s.io/v1" and doc["kind"] == "NetworkPolicy"
        assert "namespace" not in doc["metadata"]  # applied with -n
        assert sorted(doc["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    by_name = {doc["metadata"]["name"]: doc["spec"] for doc in docs}
    assert len(by_name) == len(docs) == 4
    return by_name


def test_k8s_default_deny(policies: dict[str, dict[str, Any]]) -> None:
    deny = policies["raychat-default-deny"]
    assert deny["podSelector"] == {}
    assert "ingress" not in deny and "egress" not in deny


def test_k8s_ingress_pods(policies: dict[str, dict[str, Any]]) -> None:
    spec = policies["raychat-ingress"]
    assert spec["podSelector"] == INGRESS_PODS
    [rule] = spec["ingress"]
    assert "from" not in rule  # from anywhere...
    assert rule["ports"] == [
        {"protocol": "TCP", "port": 8443},
        {"protocol": "TCP", "port": 8444},
    ]  # ...on these
    assert spec["egress"] == [
        {"to": [{"podSelector": RAY_PODS}], "ports": [{"protocol": "TCP", "port": 8000}]},
        DNS,
    ]


def test_k8s_ray_pods(policies: dict[str, dict[str, Any]]) -> None:
    spec = policies["raychat-ray"]
    assert spec["podSelector"] == RAY_PODS
    assert spec["ingress"] == [
        {"from": [{"podSelector": RAY_PODS}]},  # every port
        {"from": [{"podSelector": INGRESS_PODS}], "ports": [{"protocol": "TCP", "port": 8000}]},
    ]
    assert spec["egress"] == [
        {"to": [{"podSelector": RAY_PODS}]},
        {"to": [{"podSelector": REDIS_PODS}], "ports": [{"protocol": "TCP", "port": 6379}]},
        DNS,
    ]


def test_k8s_redis(policies: dict[str, dict[str, Any]]) -> None:
    spec = policies["raychat-redis"]
    assert spec["podSelector"] == REDIS_PODS
    assert spec["ingress"] == [
        {"from": [{"podSelector": RAY_PODS}], "ports": [{"protocol": "TCP", "port": 6379}]}
    ]
    assert "egress" not in spec  # opens no connections


def test_k8s_ports_match_the_default_settings(policies: dict[str, dict[str, Any]]) -> None:
    s = load_settings()
    assert [p["port"] for p in policies["raychat-ingress"]["ingress"][0]["ports"]] == [
        s.ingress.nginx_https_port,
        s.ingress.traefik_https_port,
    ]
    assert policies["raychat-ray"]["ingress"][1]["ports"][0]["port"] == s.serve.port


def test_the_edge_reaches_the_gateway_replicas_direct_ingress_ports() -> None:
    text = firewall.render(settings(), "edge")
    ports = ", ".join(str(p) for p in [8000, *range(30000, 30008)])
    assert f"tcp dport {{ {ports} }} accept" in text
