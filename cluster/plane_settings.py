"""Settings of the planes around the application: certificates (`tls`) and the network policy
(`firewall`). The Ray, Serve, ingress and Redis sections carry their own switches for these."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field

from deployments.config import Section


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TLSSettings(Section):
    """HTTPS at the edge and mTLS from the ingress to Serve. Without a site certificate `up` makes a private
    CA and the certificates every plane needs under `<data_dir>/tls/` (private keys mode 0600)."""

    enabled: bool = Field(True, description="HTTPS listeners at the edge and mTLS from the ingress to Serve")
    site_cert: Path | None = Field(None, description="the site's server certificate (PEM, with its chain)")
    site_key: Path | None = Field(None, description="its private key (PEM)")
    hostnames: list[str] = Field(
        default_factory=list,
        description="names and addresses clients use, added to the generated server certificate "
        "(localhost, 127.0.0.1 and ingress.host are always in it)",
    )
    ca_days: int = Field(3650, ge=1, description="validity of the generated CA")
    cert_days: int = Field(397, ge=1, description="validity of generated server and client certificates")
    renew_before_days: int = Field(
        30, ge=0, description="`up` renews a generated certificate this close to expiry"
    )
    hsts_max_age_s: int = Field(31536000, ge=0, description="Strict-Transport-Security max-age on HTTPS")
    serve_mtls: bool = Field(
        True, description="Serve's HTTP proxy serves HTTPS and wants a client certificate from raychat's CA"
    )


class FirewallSettings(Section):
    """What `raychat firewall` renders as nftables rules (and `cluster/k8s/` as NetworkPolicies)."""

    client_networks: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0", "::/0"],
        description="networks (CIDR) whose clients may reach the ingress HTTPS port",
    )
    cluster_addresses: list[str] = Field(
        default_factory=list,
        description="addresses or CIDRs of the cluster's own nodes; ray.host is always one of them",
    )
    allowed_outbound: list[str] = Field(
        default_factory=list,
        description="destinations cluster nodes may open connections to besides cluster members, as "
        "'address[/prefix][:port][/tcp|udp]' (DNS resolvers, NTP servers, a model mirror)",
    )
    table: str = Field("raychat", pattern=r"^[A-Za-z0-9_]+$", description="the nftables table raychat owns")
