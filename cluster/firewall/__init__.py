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

import sys

from cluster.firewall.nft import INSTALL_HINT, NFT, FirewallError, apply, check_own_table, remove, summary
from cluster.firewall.policy import (
    ROLES,
    Address,
    AddressSet,
    Destination,
    FirewallConfigError,
    Network,
    Plan,
    Protocol,
    Role,
    plan,
)
from cluster.firewall.rules import DROP_LOG_PREFIX, render, render_plan
from cluster.settings import RaychatSettings

__all__ = [
    "DROP_LOG_PREFIX",
    "INSTALL_HINT",
    "NFT",
    "ROLES",
    "Address",
    "AddressSet",
    "Destination",
    "FirewallConfigError",
    "FirewallError",
    "Network",
    "Plan",
    "Protocol",
    "Role",
    "apply",
    "check_own_table",
    "command",
    "plan",
    "remove",
    "render",
    "render_plan",
    "summary",
]


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
