"""Secret files under `data/secrets/`: made once on first start, mode 0600, never logged.

The gateway reads the pepper from here (never from its settings, which Ray shows on its dashboard);
`raychat up` writes the admin and service keys here.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

PEPPER_FILE = "key_pepper"
ADMIN_KEY_FILE = "admin.key"
SERVICE_KEY_FILE = "service.key"


def ensure_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    return directory


def write_secret(path: Path, value: str, *, newline: bool = True) -> None:
    """Writes `value` with mode 0600 from the first byte (never readable by others, even briefly)."""
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + ("\n" if newline else ""))
    os.replace(tmp, path)


def read_secret(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def read_or_create(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """(the secret, whether it was created now)."""
    existing = read_secret(path)
    if existing is not None:
        return existing, False
    value = make()
    write_secret(path, value)
    return value, True


def ensure_pepper(secrets_dir: Path) -> bytes:
    """The server's key for hashing API keys (made by `raychat up` before anything runs): without it a
    stolen Redis dump verifies nothing."""
    value, _ = read_or_create(secrets_dir / PEPPER_FILE, lambda: secrets.token_hex(32))
    return bytes.fromhex(value)


def read_pepper(secrets_dir: Path) -> bytes:
    """The pepper `up` made; the gateway never makes one (two replicas would make two)."""
    value = read_secret(secrets_dir / PEPPER_FILE)
    if value is None:
        raise FileNotFoundError(f"{secrets_dir / PEPPER_FILE} is missing; `raychat up` creates it")
    return bytes.fromhex(value)
