"""Rendering: the nftables text of a checked `Plan` (pure: runs nothing, reads nothing)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from cluster.firewall.policy import Destination, Network, Plan, _net, plan
from cluster.settings import RaychatSettings

DROP_LOG_PREFIX = "raychat-drop-out "


def _set(name: str, kind: str, networks: Sequence[Network], why: str) -> list[str]:
    lines = [f"\t# {why}", f"\tset {name} {{", f"\t\ttype {kind}", "\t\tflags interval"]
    if networks:
        lines.append("\t\telements = { " + ", ".join(_net(n) for n in networks) + " }")
    return [*lines, "\t}", ""]


def _ports(ports: Iterable[int]) -> str:
    items = [str(p) for p in ports]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _common(hook: Literal["input", "output"]) -> list[str]:
    iface = "iif" if hook == "input" else "oif"
    # Neighbour discovery and MLD are not part of any connection, and IPv6 stops working without them.
    icmpv6 = (
        "nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, mld-listener-query"
        if hook == "input"
        else "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld2-listener-report"
    )
    return [
        f"\tchain {hook} {{",
        f"\t\ttype filter hook {hook} priority filter; policy drop;",
        f'\t\t{iface} "lo" accept comment "loopback: local services talk freely"',
        '\t\tct state established,related accept comment "replies within allowed connections"',
        "\t\tct state invalid drop",
        f'\t\ticmpv6 type {{ {icmpv6} }} accept comment "IPv6 neighbour discovery"',
    ]


def _outbound_rules(destinations: Sequence[Destination]) -> list[str]:
    if not destinations:
        return ["\t\t# firewall.allowed_outbound: none"]
    lines = ["\t\t# firewall.allowed_outbound"]
    for i, dest in enumerate(destinations):
        lines.append(f'\t\t{dest.match()} accept comment "firewall.allowed_outbound[{i}]"')
    return lines


def _drop_logged() -> list[str]:
    # Rate-limited so a process retrying in a loop cannot flood the kernel log; the counter keeps the
    # full count, visible in `nft list table`.
    return [
        "\t\t# everything else: logged (at most 10 a minute) and dropped",
        f'\t\tlimit rate 10/minute burst 20 packets log prefix "{DROP_LOG_PREFIX}" level warn',
        "\t\tcounter drop",
        "\t}",
    ]


def render_plan(p: Plan) -> str:
    """The nft script for a checked plan."""
    t = p.table
    head = [
        "#!/usr/sbin/nft -f",
        f"# raychat firewall, role {p.role}: made by `raychat firewall --role {p.role}` from the settings;",
        "# change the settings, not this text. Load it with `--apply` (or `nft -f FILE`).",
        f"# It touches only table inet {t}: declaring the table, then deleting it, makes the load replace",
        "# raychat's previous rules in one transaction (`delete table` alone fails on the first load).",
    ]
    if p.role == "edge":
        head.append("# New inbound connections: clients to the ingress ports only (SSH included: none).")
    else:
        head.append(
            "# New inbound connections: from cluster members only (SSH from elsewhere included: none)."
        )
    head += [f"# NOTE: {note}" for note in p.notes]
    lines = [*head, f"table inet {t}", f"delete table inet {t}", "", f"table inet {t} {{"]
    lines += _set("cluster_v4", "ipv4_addr", p.cluster.v4, "cluster members (IPv4)")
    lines += _set("cluster_v6", "ipv6_addr", p.cluster.v6, "cluster members (IPv6)")
    if p.role == "edge":
        lines += _set("clients_v4", "ipv4_addr", p.clients.v4, "firewall.client_networks (IPv4)")
        lines += _set("clients_v6", "ipv6_addr", p.clients.v6, "firewall.client_networks (IPv6)")
        lines += _common("input")
        if p.client_ports:
            ports = _ports(port for port, _ in p.client_ports)
            what = "; ".join(f"{port} {label}" for port, label in p.client_ports)
            lines += [
                f"\t\t# clients to the ingress: {what}",
                "\t\t# (only HTTPS: plain HTTP, which off loopback only redirects, stays closed to clients)",
                f'\t\tip saddr @clients_v4 tcp dport {ports} accept comment "clients to the ingress"',
                f'\t\tip6 saddr @clients_v6 tcp dport {ports} accept comment "clients to the ingress"',
            ]
        lines += ["\t\t# everything else: dropped by the policy", "\t}", ""]
        lines += _common("output")
        serve = _ports(p.serve_ports)
        lines += [
            "\t\t# the ingress proxies to the Serve HTTP proxies",
            f'\t\tip daddr @cluster_v4 tcp dport {serve} accept comment "to the Serve proxies"',
            f'\t\tip6 daddr @cluster_v6 tcp dport {serve} accept comment "to the Serve proxies"',
        ]
    else:
        lines += _common("input")
        lines += [
            "\t\t# cluster members: every port (GCS, raylet, object manager, worker ports, dashboard,",
            "\t\t# Serve proxy, replica gRPC, Redis, metrics; Ray picks many of them at random)",
            '\t\tip saddr @cluster_v4 accept comment "cluster members"',
            '\t\tip6 saddr @cluster_v6 accept comment "cluster members"',
            "\t\t# everything else: dropped by the policy",
            "\t}",
            "",
        ]
        lines += _common("output")
        lines += [
            '\t\tip daddr @cluster_v4 accept comment "cluster members"',
            '\t\tip6 daddr @cluster_v6 accept comment "cluster members"',
        ]
    lines += _outbound_rules(p.outbound)
    lines += _drop_logged()
    lines += ["}", ""]
    return "\n".join(lines)


def render(settings: RaychatSettings, role: str) -> str:
    """The nftables script of `role` for these settings (pure: runs nothing, reads nothing)."""
    return render_plan(plan(settings, role))
