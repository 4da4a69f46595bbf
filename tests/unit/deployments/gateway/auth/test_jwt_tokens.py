"""The organisation's JWTs: what is accepted, what is refused, and how the key set is loaded and refreshed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest

from deployments.config import JWTSettings, Limits
from deployments.gateway.auth.identity import ALL_KNOWLEDGE_BASES, Identity
from deployments.gateway.auth.jwt_tokens import (
    JWKSUnavailable,
    JWTVerifier,
    NoRole,
    TokenRejected,
    looks_like_jwt,
)
from tests.jwt_keys import AUDIENCE, ISSUER, Issuer, make_issuer

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
DEFAULTS = Limits(rpm=600, tpm=200_000)
ROLE_MAP = {"raychat-admins": "admin", "raychat-editors": "editor", "staff": "user"}
JWT_LOGGER = "deployments.gateway.auth.jwt_tokens"


def _settings(jwks_file: Path | None = None, **overrides: Any) -> JWTSettings:
    fields: dict[str, Any] = {
        "enabled": True,
        "jwks_file": jwks_file,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "role_map": ROLE_MAP,
    }
    return JWTSettings(**(fields | overrides))


def _loaded(issuer: Issuer, clock: Callable[[], float] = time.time, **overrides: Any) -> JWTVerifier:
    """A verifier with the key set loaded once and no refresh task: enough for the synchronous checks."""
    verifier = JWTVerifier(_settings(issuer.jwks_path, **overrides), DEFAULTS, clock)
    assert asyncio.run(verifier.refresh())
    return verifier


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _eventually(attempt: Callable[[], T], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except (TokenRejected, JWKSUnavailable):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def idp(tmp_path: Path) -> Issuer:
    return make_issuer(tmp_path / "idp")


# --- accepted tokens and what they grant ---


def test_valid_token_names_the_caller_with_mapped_role_grants_and_limits(idp: Issuer) -> None:
    verifier = _loaded(idp, limits=Limits(rpm=5))
    token = idp.token(
        "alice",
        groups=["staff", "raychat-editors"],
        kbs=["docs", "hr"],
        extra={"preferred_username": "alice.l"},
    )
    identity = verifier.verify(token)
    assert identity == Identity(
        "jwt", "alice", "alice.l", "editor", frozenset({"docs", "hr"}), Limits(rpm=5, tpm=200_000)
    )
    assert identity.may_edit("docs") and identity.may_read("hr") and not identity.may_read("finance")


def test_name_prefers_name_claim_then_falls_back_to_subject(idp: Issuer) -> None:
    verifier = _loaded(idp)
    assert verifier.verify(idp.token("u1", groups="staff", extra={"name": "Ada L"})).name == "Ada L"
    assert verifier.verify(idp.token("u1", groups="staff")).name == "u1"


@pytest.mark.parametrize(
    ("groups", "role"),
    [
        (["staff", "raychat-admins", "raychat-editors"], "admin"),
        (["raychat-editors", "staff"], "editor"),
        ("staff raychat-editors", "editor"),
        ("staff,raychat-admins", "admin"),
        (["staff", "unknown"], "user"),
    ],
)
def test_highest_mapped_role_wins(idp: Issuer, groups: list[str] | str, role: str) -> None:
    assert _loaded(idp).verify(idp.token(groups=groups)).role == role


def test_no_mapped_group_is_refused_with_no_role_unless_there_is_a_default(idp: Issuer) -> None:
    token = idp.token(groups=["contractors"])
    with pytest.raises(NoRole) as refused:
        _loaded(idp).verify(token)
    assert isinstance(refused.value, TokenRejected)
    with pytest.raises(NoRole):
        _loaded(idp).verify(idp.token(groups=None))
    assert _loaded(idp, default_role="user").verify(token).role == "user"


def test_star_grants_every_knowledge_base_and_admins_get_all_implicitly(idp: Issuer) -> None:
    verifier = _loaded(idp)
    everything = verifier.verify(idp.token(groups="staff", kbs="*"))
    assert everything.knowledge_bases == frozenset({ALL_KNOWLEDGE_BASES}) and everything.may_read("anything")
    assert verifier.verify(idp.token(groups="staff", kbs="docs, hr")).knowledge_bases == {"docs", "hr"}
    assert verifier.verify(idp.token(groups="staff")).knowledge_bases == frozenset()
    admin = verifier.verify(idp.token(groups=["raychat-admins"]))
    assert admin.knowledge_bases == frozenset({ALL_KNOWLEDGE_BASES}) and admin.may_edit("finance")


def test_configured_claims_are_read(idp: Issuer) -> None:
    verifier = _loaded(idp, subject_claim="email", roles_claim="roles", grants_claim="kbs")
    token = idp.token(extra={"email": "bob@example.org", "roles": ["raychat-editors"], "kbs": ["docs"]})
    identity = verifier.verify(token)
    assert (identity.subject, identity.role, identity.knowledge_bases) == (
        "bob@example.org",
        "editor",
        {"docs"},
    )


def test_clock_skew_within_leeway_is_accepted(idp: Issuer) -> None:
    verifier = _loaded(idp)  # leeway_s defaults to 30
    assert verifier.verify(idp.token(groups="staff", exp_in=-10, nbf_in=10)).subject == "alice"


def test_token_without_kid_uses_the_only_key_in_the_set(idp: Issuer, tmp_path: Path) -> None:
    kidless = replace(idp, kid=None).token(groups="staff")
    assert _loaded(idp).verify(kidless).subject == "alice"
    # With two keys in the set, a token must say which one it was signed with.
    second = make_issuer(tmp_path / "second", kid="test-2")
    both = json.loads(idp.jwks_path.read_text())["keys"] + json.loads(second.jwks_path.read_text())["keys"]
    idp.jwks_path.write_text(json.dumps({"keys": both}))
    verifier = _loaded(idp)
    assert verifier.verify(second.token(groups="staff")).subject == "alice"
    with pytest.raises(TokenRejected):
        verifier.verify(kidless)


def test_key_without_alg_in_the_jwks_still_verifies(idp: Issuer) -> None:
    document = json.loads(idp.jwks_path.read_text())
    del document["keys"][0]["alg"]
    idp.jwks_path.write_text(json.dumps(document))
    assert _loaded(idp).verify(idp.token(groups="staff")).role == "user"


def test_es256_keys_are_accepted(tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path, alg="ES256")
    assert _loaded(issuer).verify(issuer.token(groups="staff")).subject == "alice"


# --- refused tokens ---


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda idp: idp.token(groups="staff", exp_in=-120), id="expired"),
        pytest.param(lambda idp: idp.token(groups="staff", nbf_in=120), id="not-yet-valid"),
        pytest.param(
            lambda idp: idp.token(groups="staff", extra={"iat": int(time.time()) + 600}), id="iat-future"
        ),
        pytest.param(lambda idp: idp.token(groups="staff", extra={"exp": None}), id="no-exp"),
        pytest.param(lambda idp: idp.token(groups="staff", extra={"exp": math.inf}), id="exp-infinity"),
        pytest.param(lambda idp: idp.token(groups="staff", extra={"exp": "9999999999"}), id="exp-string"),
        pytest.param(lambda idp: idp.token(groups="staff", aud="another-app"), id="wrong-audience"),
        pytest.param(lambda idp: idp.token(groups="staff", extra={"aud": None}), id="no-audience"),
        pytest.param(lambda idp: idp.token(groups="staff", iss="https://evil.test"), id="wrong-issuer"),
        pytest.param(lambda idp: idp.token(None, groups="staff"), id="no-sub"),
        pytest.param(lambda idp: idp.token("", groups="staff"), id="empty-sub"),
        pytest.param(lambda idp: idp.token(groups="staff", extra={"sub": 42}), id="sub-not-string"),
        pytest.param(lambda idp: replace(idp, kid="nobody").token(groups="staff"), id="unknown-kid"),
        pytest.param(lambda idp: idp.token(groups="staff")[:-4] + "AAAA", id="tampered-signature"),
        pytest.param(lambda idp: "not-a-token", id="garbage"),
    ],
)
def test_invalid_tokens_are_rejected(idp: Issuer, make: Callable[[Issuer], str]) -> None:
    with pytest.raises(TokenRejected) as refused:
        _loaded(idp).verify(make(idp))
    assert not isinstance(refused.value, NoRole)


def test_audience_list_containing_ours_is_accepted(idp: Issuer) -> None:
    assert _loaded(idp).verify(idp.token(groups="staff", aud=["other", AUDIENCE])).subject == "alice"


def test_token_signed_by_another_key_pair_is_rejected(idp: Issuer, tmp_path: Path) -> None:
    impostor = make_issuer(tmp_path / "impostor", kid=idp.kid)  # same kid, different private key
    with pytest.raises(TokenRejected, match="Signature"):
        _loaded(idp).verify(impostor.token(groups="raychat-admins"))


def test_alg_none_token_is_rejected(idp: Issuer) -> None:
    unsigned = jwt.encode(
        _claims(idp.token(groups="raychat-admins")), None, algorithm="none", headers={"kid": idp.kid}
    )
    assert looks_like_jwt(unsigned)
    with pytest.raises(TokenRejected, match="not allowed"):
        _loaded(idp).verify(unsigned)


def test_hs256_token_keyed_with_the_public_key_is_rejected(idp: Issuer) -> None:
    # The classic confusion attack: HMAC with the published public key as the shared secret.
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.kid}).encode())
    payload = _b64(json.dumps(_claims(idp.token(groups="raychat-admins"))).encode())
    signature = hmac.new(idp.public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(TokenRejected, match="not allowed"):
        _loaded(idp).verify(f"{header}.{payload}.{_b64(signature)}")


@pytest.mark.parametrize("algorithms", [["RS256", "HS256"], ["none"], ["NONE", "ES256"]])
def test_symmetric_or_none_algorithms_cannot_be_configured(idp: Issuer, algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="may not include"):
        JWTVerifier(_settings(idp.jwks_path, algorithms=algorithms), DEFAULTS)


def test_verifier_needs_issuer_and_audience(idp: Issuer) -> None:
    with pytest.raises(ValueError, match="issuer"):
        JWTVerifier(JWTSettings(jwks_file=idp.jwks_path, audience=AUDIENCE), DEFAULTS)


def test_times_follow_the_injected_clock(idp: Issuer) -> None:
    offset = [0.0]
    verifier = _loaded(idp, clock=lambda: time.time() + offset[0])
    token = idp.token(groups="staff", exp_in=300)
    assert verifier.verify(token).subject == "alice"
    offset[0] = 400
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify(token)


def test_looks_like_jwt(idp: Issuer) -> None:
    assert looks_like_jwt(idp.token())
    assert not looks_like_jwt("rc-0123456789ab.Zm9vYmFyYmF6cXV4")
    assert not looks_like_jwt("rc-0123456789ab.c2VjcmV0.c2VjcmV0")  # three segments, but no JSON header
    assert not looks_like_jwt("a.b.c")
    assert not looks_like_jwt(f"{_b64(b'{}')}.e30.sig")  # a JSON header without alg
    assert not looks_like_jwt("")
    assert not looks_like_jwt("one two.three.four")


# --- loading and refreshing the key set ---


def test_unknown_kid_refreshes_early_and_finds_the_rotated_key(tmp_path: Path) -> None:
    old = make_issuer(tmp_path)
    verifier = JWTVerifier(_settings(old.jwks_path), DEFAULTS)  # refresh_s 300: only an early refresh helps

    async def scenario() -> None:
        await verifier.start()
        try:
            assert verifier.verify(old.token(groups="staff")).subject == "alice"
            new = make_issuer(tmp_path, kid="test-2")  # the IdP rotates: the file now has test-2 only
            token = new.token("bob", groups="staff")
            with pytest.raises(TokenRejected, match="kid"):
                verifier.verify(token)  # unknown for now; wakes the refresh task
            assert (await _eventually(lambda: verifier.verify(token))).subject == "bob"
            with pytest.raises(TokenRejected):
                verifier.verify(old.token(groups="staff"))
        finally:
            await verifier.close()

    asyncio.run(scenario())


def test_unknown_kids_refresh_at_most_once_per_30_seconds(idp: Issuer) -> None:
    start, offset = time.time(), [0.0]  # a frozen clock, moved by hand
    verifier = JWTVerifier(_settings(idp.jwks_path), DEFAULTS, clock=lambda: start + offset[0])
    forged = replace(idp, kid="forged")

    async def scenario() -> list[int]:
        await verifier.start()
        loads: list[int] = []
        load = verifier._load

        def counting_load() -> Any:
            loads.append(1)
            return load()

        verifier._load = counting_load  # type: ignore[method-assign]
        try:
            counts = []
            for advance, expected in ((0, 1), (1, 1), (28, 1), (2, 2)):
                offset[0] += advance
                with pytest.raises(TokenRejected):
                    verifier.verify(forged.token(exp_in=600))
                await _until(lambda expected=expected: len(loads) >= expected)
                await asyncio.sleep(0.2)  # time for a refresh that should not happen
                counts.append(len(loads))
            return counts
        finally:
            await verifier.close()

    # t=0 refreshes; t=1 and t=29 are within 30 s of it; t=31 refreshes again.
    assert asyncio.run(scenario()) == [1, 1, 1, 2]


def test_background_refresh_picks_up_a_new_key_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_issuer(tmp_path)
    verifier = JWTVerifier(_settings(tmp_path / "jwks.json", refresh_s=0.05), DEFAULTS)
    monkeypatch.setattr(verifier, "_refresh_soon", lambda: None)  # only the periodic refresh may help

    async def scenario() -> Identity:
        await verifier.start()
        try:
            new = make_issuer(tmp_path, kid="test-2")
            return await _eventually(lambda: verifier.verify(new.token("carol", groups="staff")))
        finally:
            await verifier.close()

    assert asyncio.run(scenario()).subject == "carol"


def test_failed_refresh_keeps_the_previous_keys_and_warns_once(
    idp: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = _loaded(idp)
    token = idp.token(groups="staff")
    idp.jwks_path.write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger=JWT_LOGGER):
        assert asyncio.run(verifier.refresh()) is False
    warnings = [record for record in caplog.records if record.name == JWT_LOGGER]
    assert len(warnings) == 1 and "keeping the previous keys" in warnings[0].getMessage()
    assert verifier.verify(token).subject == "alice"
    idp.jwks_path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))  # nothing usable
    assert asyncio.run(verifier.refresh()) is False
    assert verifier.verify(token).subject == "alice"


def test_failing_background_refresh_keeps_the_previous_keys(
    idp: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = JWTVerifier(_settings(idp.jwks_path, refresh_s=0.05), DEFAULTS)
    caplog.set_level(logging.WARNING, logger=JWT_LOGGER)

    async def scenario() -> Identity:
        await verifier.start()
        try:
            idp.jwks_path.unlink()
            await _until(lambda: len([r for r in caplog.records if r.name == JWT_LOGGER]) >= 2)
            return verifier.verify(idp.token(groups="staff"))
        finally:
            await verifier.close()

    assert asyncio.run(scenario()).subject == "alice"


def test_no_key_set_yet_is_unavailable_until_one_loads(tmp_path: Path) -> None:
    verifier = JWTVerifier(_settings(tmp_path / "jwks.json"), DEFAULTS)  # the file does not exist yet

    async def scenario() -> Identity:
        await verifier.start()  # does not fail: API keys keep working while the IdP is unreachable
        try:
            assert not verifier.ready
            issuer = make_issuer(tmp_path)
            token = issuer.token(groups="staff")
            with pytest.raises(JWKSUnavailable):
                verifier.verify(token)  # and wakes the refresh task
            return await _eventually(lambda: verifier.verify(token))
        finally:
            await verifier.close()

    assert asyncio.run(scenario()).subject == "alice"


@contextmanager
def _serving(body: Callable[[], bytes]) -> Iterator[tuple[str, dict[str, int]]]:
    """A JWKS endpoint on 127.0.0.1 in a thread; `state["status"]` sets its answer."""
    state = {"status": 200, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            found = self.path == "/jwks.json"
            state["hits"] += found
            payload = body() if found and state["status"] == 200 else b"{}"
            self.send_response(state["status"] if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_jwks_fetched_from_a_url_and_kept_when_the_server_fails(
    idp: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with _serving(idp.jwks_path.read_bytes) as (url, state):
        settings = _settings(None, jwks_url=url, refresh_s=0.05)
        verifier = JWTVerifier(settings, DEFAULTS)

        async def scenario() -> Identity:
            await verifier.start()
            try:
                assert verifier.ready
                state["status"] = 503
                failing_from = state["hits"]
                await _until(lambda: state["hits"] >= failing_from + 2)  # failed refreshes, not one
                await asyncio.sleep(0.05)
                return verifier.verify(idp.token(groups="raychat-editors"))
            finally:
                await verifier.close()

        assert asyncio.run(scenario()).role == "editor"
