"""Loading: running nft to apply or remove `table inet <firewall.table>`, refusing any script that would
touch another table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence

from cluster.firewall.policy import _TABLE_NAME

NFT: tuple[str, ...] = ("nft",)
INSTALL_HINT = "nft not found: install nftables (apt-get install nftables)"


class FirewallError(RuntimeError):
    """nft is missing, not allowed, or refused the ruleset."""


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
