"""The typed model of the firewall settings: `plan` parses and checks them into a `Plan` of `AddressSet`s
and `Destination`s; a malformed entry is a `FirewallConfigError` naming it."""

from __future__ import annotations

import ipaddress
import re
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

# nft identifiers start with a letter; the settings' pattern alone would let "123" through, which nft
# would read as a number.
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class FirewallConfigError(SettingsError):
    """A firewall setting that cannot be turned into rules; the message names the entry."""


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
    if settings.serve.direct_ingress and not settings.ingress.upstreams:
        # The Gateway replicas' own ports: the proxies send requests straight to them.
        serve_ports.update(settings.serve.direct_ingress_range())
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
