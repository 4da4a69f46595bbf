"""`raychat firewall`: the network policy as code, rendered from the settings as nftables rules.

One table, `table inet <firewall.table>`, holds everything raychat asks of the kernel: an `input` and an
`output` base chain, both with policy drop, and the address sets they match. Three roles:

- edge (the ingress host): clients in `firewall.client_networks` reach the ingress ports only; the edge
  opens connections only to the Serve proxies of the cluster and to `firewall.allowed_outbound`.
- head and worker (Ray nodes): cluster members reach every port (Ray listens on many dynamic ports:
  GCS, raylet, object manager, worker ports, dashboard, Serve proxy, replica gRPC, Redis, metrics); a node
  opens connections only to cluster members and `firewall.allowed_outbound`; other outbound packets are
  dropped and logged (rate-limited, prefix "raychat-drop-out ").

Cluster members are `firewall.cluster_addresses`, `ray.host`, the head in `ray.address`, and, when not on
loopback, `serve.host`, the Redis URL's host and the hosts of `ingress.upstreams`. Host *names* cannot go
into an address set: the rendered text says which were left out, so they can be listed as addresses.

`render` is pure (settings in, text out). `apply` loads a rendered ruleset with `nft -f -` and `remove`
deletes the table; both refuse to touch any other table. The rendered text declares the table, deletes it
and defines it again, so loading it replaces raychat's previous rules in one transaction (nft applies a
script all or nothing) and leaves every other table on the host alone. Chains of other tables on the same
hooks still run: a packet must be accepted by all of them, so this table can only take access away.

A host whose address comes from DHCP keeps it (DHCP clients use packet sockets, which netfilter does not
filter); DNS resolvers and NTP servers that are not cluster members go in `firewall.allowed_outbound`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, get_args
from urllib.parse import urlsplit

from cluster.settings import RaychatSettings, SettingsError

Role = Literal["edge", "head", "worker"]
ROLES: tuple[Role, ...] = get_args(Role)
Protocol = Literal["tcp", "udp"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NFT: tuple[str, ...] = ("nft",)
DROP_LOG_PREFIX = "raychat-drop-out "
# nft identifiers start with a letter; the settings' pattern alone would let "123" through, which nft
# would read as a number.
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
INSTALL_HINT = "nft not found: install nftables (apt-get install nftables)"


class FirewallConfigError(SettingsError):
    """A firewall setting that cannot be turned into rules; the message names the entry."""


class FirewallError(RuntimeError):
    """nft is missing, not allowed, or refused the ruleset."""


# --- the typed model of the settings ----------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """One `firewall.allowed_outbound` entry: 'address[/prefix][:port][/tcp|udp]'.

    An IPv6 address with a port is written in brackets: '[2001:db8::53]:53/udp'. A port without a
    protocol means both TCP and UDP (DNS); a protocol without a port means every port of it.
    """

    network: Network
    port: int | None
    protocol: Protocol | None
    entry: str

    @classmethod
    def parse(cls, text: str, where: str) -> Destination:
        def bad(reason: str) -> FirewallConfigError:
            return FirewallConfigError(
                f"{where}: {text!r} is not 'address[/prefix][:port][/tcp|udp]' ({reason})"
            )

        rest = text.strip()
        protocol: Protocol | None = None
        lowered = rest.lower()
        for name in ("tcp", "udp"):
            if lowered.endswith("/" + name):
                protocol = "tcp" if name == "tcp" else "udp"
                rest = rest[: -len(name) - 1]
                break
        port_text: str | None = None
        if rest.startswith("["):
            close = rest.find("]")
            if close < 0:
                raise bad("'[' without ']'")
            address_text, after = rest[1:close], rest[close + 1 :]
            if after:
                if not after.startswith(":"):
                    raise bad(f"unexpected {after!r} after ']'")
                port_text = after[1:]
        elif rest.count(":") == 1:
            # One colon: IPv4 with a port. Two or more: a bare IPv6 address (use brackets for a port).
            address_text, port_text = rest.split(":")
        else:
            address_text = rest
        try:
            network = ipaddress.ip_network(address_text, strict=False)
        except ValueError as exc:
            raise bad(f"not an IP address or network: {exc}") from None
        port: int | None = None
        if port_text is not None:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise bad(f"port {port_text!r} is not 1-65535")
            port = int(port_text)
        return cls(network=network, port=port, protocol=protocol, entry=text.strip())

    def match(self) -> str:
        """The nft match for packets to this destination."""
        family = "ip" if self.network.version == 4 else "ip6"
        parts = [f"{family} daddr {_net(self.network)}"]
        if self.port is not None and self.protocol is not None:
            parts.append(f"{self.protocol} dport {self.port}")
        elif self.port is not None:
            # `th` (transport header) reads the port of either protocol.
            parts.append(f"meta l4proto {{ tcp, udp }} th dport {self.port}")
        elif self.protocol is not None:
            parts.append(f"meta l4proto {self.protocol}")
        return " ".join(parts)


@dataclass(frozen=True)
class AddressSet:
    """Networks split by family (nft sets hold one family), overlaps merged (an interval set refuses
    overlapping elements)."""

    v4: tuple[ipaddress.IPv4Network, ...] = ()
    v6: tuple[ipaddress.IPv6Network, ...] = ()

    @classmethod
    def of(cls, networks: Iterable[Network]) -> AddressSet:
        nets = list(networks)
        v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
        v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
        return cls(
            v4=tuple(ipaddress.collapse_addresses(v4)),
            v6=tuple(ipaddress.collapse_addresses(v6)),
        )


@dataclass(frozen=True)
class Plan:
    """Everything the rules of one role depend on, parsed and checked once."""

    role: Role
    table: str
    cluster: AddressSet
    clients: AddressSet
    client_ports: tuple[tuple[int, str], ...]  # (port, what listens there), edge only
    serve_ports: tuple[int, ...]  # where the edge reaches the Serve proxies
    outbound: tuple[Destination, ...]
    notes: tuple[str, ...] = field(default=())


def _net(network: Network) -> str:
    # A single address is written without /32 or /128, the way `nft list` shows it.
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _networks(entries: Sequence[str], where: str) -> list[Network]:
    out: list[Network] = []
    for i, entry in enumerate(entries):
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise FirewallConfigError(f"{where}[{i}]: {entry!r} is not an address or CIDR ({exc})") from None
    return out


def _host_of(endpoint: str) -> str | None:
    """'host:port', '[v6]:port', a bare host or a URL -> the host."""
    url = endpoint if "://" in endpoint else f"//{endpoint}"
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _member(host: str | None, origin: str, notes: list[str], keep_loopback: bool) -> Network | None:
    """A host named in the settings as a cluster member, if it can go into an address set."""
    if not host:
        return None
    if host == "localhost":
        return None  # loopback: the `lo` rules cover it
    try:
        address: Address = ipaddress.ip_address(host)
    except ValueError:
        notes.append(
            f"{origin} {host!r} is a name, not an address: list its addresses in firewall.cluster_addresses"
        )
        return None
    if address.is_unspecified:
        notes.append(
            f"{origin} {host} binds every interface: list this node's addresses in firewall.cluster_addresses"
        )
        return None
    if address.is_loopback and not keep_loopback:
        return None
    return ipaddress.ip_network(address)


def _ingress_ports(settings: RaychatSettings) -> tuple[tuple[int, str], ...]:
    ingress = settings.ingress
    ports: dict[int, str] = {}
    if ingress.kind in ("nginx", "both"):
        ports.setdefault(ingress.nginx_https_port, "nginx HTTPS")
    if ingress.kind in ("traefik", "both"):
        ports.setdefault(ingress.traefik_https_port, "traefik HTTPS")
    return tuple(sorted(ports.items()))


def plan(settings: RaychatSettings, role: str) -> Plan:
    """The settings of one role, checked: a malformed entry is an error naming it."""
    if role not in ROLES:
        raise FirewallConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
    fw = settings.firewall
    if not _TABLE_NAME.match(fw.table):
        raise FirewallConfigError(f"firewall.table: {fw.table!r} must start with a letter")
    outbound = tuple(
        Destination.parse(entry, f"firewall.allowed_outbound[{i}]")
        for i, entry in enumerate(fw.allowed_outbound)
    )
    notes: list[str] = []
    members = _networks(fw.cluster_addresses, "firewall.cluster_addresses")
    candidates: list[tuple[str | None, str, bool]] = [(settings.ray.host, "ray.host", True)]
    if settings.ray.address:
        candidates.append((_host_of(settings.ray.address), "ray.address host", False))
    candidates.append((settings.serve.host, "serve.host", False))
    candidates.append((_host_of(settings.redis.url), "redis.url host", False))
    serve_ports = {settings.serve.port}
    for i, upstream in enumerate(settings.ingress.upstreams):
        candidates.append((_host_of(upstream), f"ingress.upstreams[{i}] host", False))
        try:
            port = urlsplit(upstream if "://" in upstream else f"//{upstream}").port
        except ValueError:
            port = None
        if port:
            serve_ports.add(port)
    for host, origin, keep_loopback in candidates:
        member = _member(host, origin, notes, keep_loopback)
        if member is not None:
            members.append(member)
    client_ports: tuple[tuple[int, str], ...] = ()
    clients = AddressSet()
    if role == "edge":
        client_ports = _ingress_ports(settings)
        clients = AddressSet.of(_networks(fw.client_networks, "firewall.client_networks"))
        if not client_ports:
            notes.append("ingress.kind is none: no ingress port is opened to clients")
    return Plan(
        role=cast(Role, role),  # checked against ROLES above
        table=fw.table,
        cluster=AddressSet.of(members),
        clients=clients,
        client_ports=client_ports,
        serve_ports=tuple(sorted(serve_ports)),
        outbound=outbound,
        notes=tuple(dict.fromkeys(notes)),
    )


# --- rendering --------------------------------------------------------------------------------------


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


# --- loading ----------------------------------------------------------------------------------------


def _top_level(ruleset: str) -> list[str]:
    """The statements of an nft script outside any braces, without comments and quoted strings."""
    statements: list[str] = []
    current: list[str] = []
    depth = 0
    in_quote = in_comment = False
    for ch in ruleset:
        if in_comment:
            if ch == "\n":
                in_comment = False
            else:
                continue
        if in_quote:
            in_quote = ch != '"'
            continue
        if ch == '"':
            in_quote = True
        elif ch == "#":
            in_comment = True
        elif ch == "{":
            if depth == 0:
                statements.append("".join(current))
                current = []
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            if ch in "\n;":
                statements.append("".join(current))
                current = []
            else:
                current.append(ch)
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def check_own_table(ruleset: str, table: str) -> None:
    """Refuse a script that would touch anything but `table inet <table>` (another table, the whole
    ruleset, an include)."""
    _check_table_name(table)
    allowed = [["table", "inet", table]] + [
        [verb, "table", "inet", table] for verb in ("add", "delete", "flush")
    ]
    for statement in _top_level(ruleset):
        if statement.split() not in allowed:
            raise FirewallError(f"refusing to load: {statement!r} is outside table inet {table}")


def _check_table_name(table: str) -> None:
    if not _TABLE_NAME.match(table):
        raise FirewallError(f"table name {table!r}: letters, digits and _ only, starting with a letter")


def _nft(nft: Sequence[str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("nft") is None:
        raise FirewallError(INSTALL_HINT)
    try:
        return subprocess.run(
            [*nft, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise FirewallError(INSTALL_HINT) from None


def _require_root() -> None:
    # nft talks netlink with CAP_NET_ADMIN; without it every command fails with a less helpful message.
    if os.geteuid() != 0:
        raise FirewallError("changing nftables rules needs root: run it as root (sudo raychat firewall ...)")


def _failed(what: str, result: subprocess.CompletedProcess[str]) -> FirewallError:
    detail = result.stderr.strip() or result.stdout.strip()
    if "Operation not permitted" in detail:
        return FirewallError(f"{what}: not permitted (needs root, CAP_NET_ADMIN): {detail}")
    return FirewallError(f"{what} failed (nothing was changed): {detail}")


def _listing(nft: Sequence[str], table: str) -> str | None:
    """`nft list table`, or None when the table does not exist."""
    result = _nft(nft, "list", "table", "inet", table)
    return result.stdout if result.returncode == 0 else None


def summary(nft: Sequence[str], table: str) -> str:
    """Chains (hook, policy, rule count) and sets (element count) of the table, one line each."""
    result = _nft(nft, "-j", "list", "table", "inet", table)
    if result.returncode != 0:
        return f"table inet {table}: not loaded"
    try:
        objects = json.loads(result.stdout)["nftables"]
    except (ValueError, KeyError):
        return f"table inet {table}: loaded (no JSON summary from this nft)"
    chains: dict[str, dict[str, object]] = {}
    rules: dict[str, int] = {}
    sets: dict[str, int] = {}
    for obj in objects:
        if "chain" in obj:
            chains[obj["chain"]["name"]] = obj["chain"]
        elif "rule" in obj:
            rules[obj["rule"]["chain"]] = rules.get(obj["rule"]["chain"], 0) + 1
        elif "set" in obj:
            sets[obj["set"]["name"]] = len(obj["set"].get("elem", []))
    lines = [f"table inet {table}:"]
    for name, chain in chains.items():
        hook = f"hook {chain['hook']}, policy {chain.get('policy', 'accept')}, " if "hook" in chain else ""
        lines.append(f"  chain {name}: {hook}{rules.get(name, 0)} rules")
    for name, count in sets.items():
        lines.append(f"  set {name}: {count} element{'s' if count != 1 else ''}")
    return "\n".join(lines)


def apply(ruleset: str, table: str, *, nft: Sequence[str] = NFT) -> str:
    """Load `ruleset` (from `render`) with `nft -f -`, replacing raychat's previous table atomically;
    returns what changed: the previous table, if any, and a summary of the new one."""
    check_own_table(ruleset, table)
    _require_root()
    previous = _listing(nft, table)
    result = _nft(nft, "-f", "-", stdin=ruleset)
    if result.returncode != 0:
        raise _failed(f"nft -f (table inet {table})", result)
    if previous is None:
        before = f"table inet {table} was not loaded; created it."
    else:
        before = f"replaced the previous table inet {table}:\n" + previous.rstrip()
    return f"{before}\nnow loaded:\n{summary(nft, table)}"


def remove(table: str, *, nft: Sequence[str] = NFT) -> str:
    """Delete `table inet <table>` and nothing else; says what was there."""
    _check_table_name(table)
    _require_root()
    if _listing(nft, table) is None:
        return f"table inet {table} was not loaded; nothing removed"
    before = summary(nft, table)
    result = _nft(nft, "delete", "table", "inet", table)
    if result.returncode != 0:
        raise _failed(f"nft delete table inet {table}", result)
    return f"removed {before}"


def command(settings: RaychatSettings, role: str | None, *, load: bool = False, unload: bool = False) -> int:
    """`raychat firewall`: print the rules of a role; with `load` apply them, with `unload` remove them."""
    try:
        if unload:
            print(remove(settings.firewall.table))
            return 0
        if role is None:
            print("raychat firewall: --role edge|head|worker is required (unless --remove)", file=sys.stderr)
            return 2
        ruleset = render(settings, role)
        print(ruleset)
        if load:
            print(apply(ruleset, settings.firewall.table))
            who = "clients to the ingress ports" if role == "edge" else "cluster members"
            print(
                f"note: new inbound connections now come only from {who} (SSH included); "
                f"open sessions stay up. Undo: raychat firewall --remove"
            )
    except FirewallError as exc:
        print(f"raychat firewall: {exc}", file=sys.stderr)
        return 1
    return 0
