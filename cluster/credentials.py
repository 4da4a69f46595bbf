"""The credentials raychat's own tools use: the admin key `up` prints, and the service key with which the
Locust suite, the benchmarks and the batch jobs call the API (their own identity, not a bypass)."""

from __future__ import annotations

from cluster.settings import RaychatSettings
from deployments.gateway.auth.secrets import ADMIN_KEY_FILE, SERVICE_KEY_FILE, read_secret


class MissingCredential(RuntimeError):
    pass


def _read(settings: RaychatSettings, name: str) -> str | None:
    if not settings.auth.enabled:
        return None
    value = read_secret(settings.secrets_dir / name)
    if value is None:
        raise MissingCredential(f"{settings.secrets_dir / name} is missing: run `raychat up` first")
    return value


def admin_key(settings: RaychatSettings) -> str | None:
    """The admin key, or None when auth is off."""
    return _read(settings, ADMIN_KEY_FILE)


def service_key(settings: RaychatSettings) -> str | None:
    """The service key, or None when auth is off."""
    return _read(settings, SERVICE_KEY_FILE)


def auth_headers(settings: RaychatSettings) -> dict[str, str]:
    """`Authorization` for raychat's own tools (service key); {} when auth is off."""
    key = service_key(settings)
    return {"Authorization": f"Bearer {key}"} if key else {}
