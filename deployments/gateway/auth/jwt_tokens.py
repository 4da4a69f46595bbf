"""Organisation sign-on: JWTs of the identity provider (OIDC), checked against its published key set (JWKS).

Ray-free and FastAPI-free. `verify` is synchronous and does no I/O, so the gateway calls it on every request;
the key set is loaded in a worker thread and refreshed by an asyncio task. Every cryptographic check is
PyJWT's; this module picks the key, fixes the allowed algorithms and maps claims to an `Identity`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from deployments.config import JWTSettings, Limits, Role
from deployments.gateway.auth.identity import ALL_KNOWLEDGE_BASES, Identity

log = logging.getLogger(__name__)

EARLY_REFRESH_S = 30.0  # unknown kids reload the set at most this often: forged kids must not hammer the IdP
FETCH_TIMEOUT_S = 10.0
MAX_JWKS_BYTES = 1 << 20
_RANK: dict[Role, int] = {"user": 1, "editor": 2, "admin": 3}
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_SEPARATORS = re.compile(r"[\s,]+")
# `none` needs no key, and HS* with a JWKS would take a published public key as the shared secret.
_FORBIDDEN_ALGS = re.compile(r"(?i)none|HS\d+")
_Keys = dict[str, PyJWK]  # one JWK, prepared for each configured algorithm its key type fits


class TokenRejected(Exception):
    """The token is not accepted. The message is for the server log only; the caller answers a plain 401."""


class NoRole(TokenRejected):
    """A valid token, but none of its groups maps to a role and there is no default role: 403, not 401."""


class JWKSUnavailable(Exception):
    """No key set has been loaded yet (the IdP or the file was never reachable): JWTs cannot be checked."""


def looks_like_jwt(credential: str) -> bool:
    """Three base64url segments whose first is a JSON header naming `alg`; never an `rc-…` API key."""
    parts = credential.split(".")
    if len(parts) != 3 or not all(_B64URL.fullmatch(part) for part in parts[:2]):
        return False
    if parts[2] and not _B64URL.fullmatch(parts[2]):  # empty for `alg: none`: still a JWT, rejected later
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


class _KeySet:
    """The usable signing keys of one JWKS document, by `kid`."""

    def __init__(self, document: Any, algorithms: list[str]) -> None:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWK set (no `keys` list)")
        self.by_kid: dict[str | None, _Keys] = {}
        entries: list[_Keys] = []
        for data in document["keys"]:
            # Encryption keys and symmetric (`oct`) keys never verify a signature here.
            if not isinstance(data, dict) or data.get("use", "sig") != "sig" or data.get("kty") == "oct":
                continue
            # A key naming its `alg` serves that one only; one without (some IdPs omit it) serves every
            # configured algorithm its type fits. A PyJWK is bound to one algorithm; PyJWT refuses others.
            wanted = [data["alg"]] if "alg" in data else algorithms
            prepared: _Keys = {}
            for alg in wanted:
                if alg in algorithms:
                    try:
                        prepared[alg] = PyJWK(data, algorithm=alg)
                    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                        continue  # a key of another type, or malformed: skipped like PyJWKSet does
            if prepared:
                entries.append(prepared)
                kid = data.get("kid") if isinstance(data.get("kid"), str) else None
                self.by_kid.setdefault(kid, {}).update(prepared)
        if not entries:
            raise ValueError(f"no usable signing key for algorithms {algorithms}")
        self.only: _Keys | None = entries[0] if len(entries) == 1 else None

    def find(self, kid: Any) -> _Keys | None:
        if isinstance(kid, str):
            return self.by_kid.get(kid)
        return self.only if kid is None else None


class JWTVerifier:
    """Verifies the organisation's JWTs; `start()` on the event loop first, `close()` at shutdown."""

    def __init__(self, settings: JWTSettings, default_limits: Limits, clock: Callable[[], float] = time.time):
        forbidden = [alg for alg in settings.algorithms if _FORBIDDEN_ALGS.fullmatch(alg)]
        if forbidden:
            raise ValueError(f"auth.jwt.algorithms may not include {forbidden}: only asymmetric algorithms")
        if (settings.jwks_file is None) == (settings.jwks_url is None):
            raise ValueError("set exactly one of auth.jwt.jwks_file and auth.jwt.jwks_url")
        if not settings.issuer or not settings.audience:
            raise ValueError("auth.jwt.issuer and auth.jwt.audience are required")  # else PyJWT skips them
        self._settings = settings
        self._algorithms = list(settings.algorithms)
        self._limits = settings.limits.merged_over(default_limits)
        self._clock = clock
        self._source = str(settings.jwks_file or settings.jwks_url)
        self._keys: _KeySet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_early = -math.inf

    @property
    def ready(self) -> bool:
        """A key set has been loaded (JWTs can be verified)."""
        return self._keys is not None

    async def start(self) -> None:
        """Loads the key set and starts the refresh task. An unreachable IdP does not fail the start: API keys
        keep working, `verify` raises `JWKSUnavailable` and the task retries every `EARLY_REFRESH_S`."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever(), name="jwks-refresh")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def refresh(self) -> bool:
        """Reads the key set again; on any failure keeps the previous one and logs one warning."""
        try:
            keys = await asyncio.to_thread(self._load)  # file or network I/O and key parsing off the loop
        except Exception as error:  # whatever went wrong, the old keys stay in use
            kept = "keeping the previous keys" if self._keys else "JWT sign-on is unavailable until it loads"
            log.warning("JWKS from %s could not be loaded (%r); %s", self._source, error, kept)
            return False
        self._keys = keys
        return True

    def verify(self, token: str) -> Identity:
        """The caller a valid token names. Raises `TokenRejected` (401), `NoRole` (403), `JWKSUnavailable`."""
        keys = self._keys
        if keys is None:
            self._refresh_soon()
            raise JWKSUnavailable(f"no JWKS loaded from {self._source}")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenRejected(f"malformed token: {error}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:  # `none`, HS*, anything not configured: before any key is looked up
            raise TokenRejected(f"algorithm {alg!r} is not allowed")
        candidates = keys.find(kid)
        if candidates is None:
            self._refresh_soon()  # the IdP may have rotated its keys: the next request may find this kid
            raise TokenRejected(f"no key for kid {kid!r}")
        key = candidates.get(alg)
        if key is None:
            raise TokenRejected(f"key {kid!r} does not serve algorithm {alg!r}")
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                issuer=s.issuer,
                audience=s.audience,
                # Times are checked below against the injectable clock; PyJWT reads the wall clock itself.
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as error:
            raise TokenRejected(f"{type(error).__name__}: {error}") from None
        self._check_times(claims)
        return self._identity(claims)

    def _check_times(self, claims: dict[str, Any]) -> None:
        now, leeway = self._clock(), self._settings.leeway_s
        expires = _time_claim(claims, "exp")
        if expires is None or expires <= now - leeway:
            raise TokenRejected("token expired (or no exp)")
        for name in ("nbf", "iat"):
            value = _time_claim(claims, name)
            if value is not None and value > now + leeway:
                raise TokenRejected(f"token not yet valid ({name})")

    def _identity(self, claims: dict[str, Any]) -> Identity:
        s = self._settings
        subject = claims.get(s.subject_claim)
        if not isinstance(subject, str) or not subject.strip():
            raise TokenRejected(f"claim {s.subject_claim!r} is missing or not a non-empty string")
        mapped = [s.role_map[group] for group in _values(claims.get(s.roles_claim)) if group in s.role_map]
        role: Role | None = max(mapped, key=_RANK.__getitem__) if mapped else s.default_role
        if role is None:
            raise NoRole(f"no group in {s.roles_claim!r} maps to a role and there is no default role")
        grants = {ALL_KNOWLEDGE_BASES} if role == "admin" else set(_values(claims.get(s.grants_claim)))
        names = (claims.get(c) for c in ("name", "preferred_username"))
        name = next((n for n in names if isinstance(n, str) and n.strip()), subject)
        return Identity("jwt", subject, name[:200], role, frozenset(grants), self._limits)

    def _load(self) -> _KeySet:
        if self._settings.jwks_file is not None:
            raw = self._settings.jwks_file.read_bytes()
        else:
            with httpx.Client(timeout=FETCH_TIMEOUT_S) as client:
                response = client.get(str(self._settings.jwks_url), headers={"Accept": "application/json"})
                response.raise_for_status()
                raw = response.content
        if len(raw) > MAX_JWKS_BYTES:
            raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        return _KeySet(json.loads(raw), self._algorithms)

    def _refresh_soon(self) -> None:
        """Wakes the refresh task, at most once per `EARLY_REFRESH_S` (a clock stepping back allows one)."""
        now = self._clock()
        if self._wake is None or self._loop is None or 0 <= now - self._last_early < EARLY_REFRESH_S:
            return
        self._last_early = now
        try:
            self._loop.call_soon_threadsafe(self._wake.set)  # safe whichever thread `verify` runs on
        except RuntimeError:  # the loop is closed: nothing to wake
            pass

    async def _refresh_forever(self) -> None:
        assert self._wake is not None
        while True:
            period = self._settings.refresh_s
            if self._keys is None:  # nothing to verify with yet: retry sooner than the regular period
                period = min(period, EARLY_REFRESH_S)
            try:
                await asyncio.wait_for(self._wake.wait(), period)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.refresh()


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # JSON allows NaN and Infinity through Python's parser: an `exp` of Infinity must not mean "never".
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected(f"claim {name!r} is not a finite number")
    return float(value)


def _values(claim: Any) -> list[str]:
    """A list claim, or a space- or comma-separated string claim; anything else grants nothing."""
    if isinstance(claim, str):
        return [part for part in _SEPARATORS.split(claim) if part]
    if isinstance(claim, list):
        return [item.strip() for item in claim if isinstance(item, str) and item.strip()]
    return []
