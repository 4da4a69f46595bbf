"""Roles and grants, key format and hashing, the admin-key bodies: pure logic."""

from __future__ import annotations

import asyncio

import pytest

from deployments.config import Limits
from deployments.gateway.auth.guard import FailureGuard, client_address
from deployments.gateway.auth.identity import Identity, anonymous_admin, hashed
from deployments.gateway.auth.keys import KeyHasher, KeyRecord, split
from deployments.gateway.auth.middleware import bearer, protected
from deployments.gateway.auth.permissions import identity_of, require_admin, require_edit, require_read
from deployments.gateway.auth.quotas import _decision
from deployments.gateway.protocol import APIError, key_create, key_update


def identity(role: str, kbs: set[str]) -> Identity:
    return Identity("key", "abc", "n", role, frozenset(kbs), Limits())  # type: ignore[arg-type]


def test_roles_and_grants() -> None:
    user, editor, admin = identity("user", {"docs"}), identity("editor", {"docs"}), identity("admin", set())
    assert user.may_read("docs") and not user.may_read("hr") and not user.may_edit("docs")
    assert editor.may_edit("docs") and not editor.may_edit("hr")
    assert admin.may_read("hr") and admin.may_edit("hr")
    assert identity("user", {"*"}).may_read("anything")


def test_ungranted_is_missing_and_seen_but_unchangeable_is_forbidden() -> None:
    with pytest.raises(APIError) as missing:
        require_read(identity("user", {"docs"}), "hr")
    assert missing.value.status == 404 and missing.value.code == "knowledge_base_not_found"
    assert missing.value.message == "knowledge base 'hr' does not exist"
    with pytest.raises(APIError) as forbidden:
        require_edit(identity("user", {"docs"}), "docs")
    assert forbidden.value.status == 403 and forbidden.value.code == "permission_denied"
    with pytest.raises(APIError) as not_admin:
        require_admin(identity("editor", {"*"}), "create keys")
    assert not_admin.value.status == 403


def test_no_identity_fails_closed() -> None:
    for state in (None, {}, {"identity": "admin"}):
        with pytest.raises(APIError) as refused:
            identity_of(state)
        assert refused.value.status == 401 and refused.value.code == "invalid_api_key"


def test_key_format_and_hash() -> None:
    key = "rc-0123456789ab." + "A" * 43
    assert split(key) == ("0123456789ab", "A" * 43)
    for bad in ("", "sk-123", key + "x", key.replace("rc-", "rc_"), "rc-0123456789ab." + "A" * 42):
        assert split(bad) is None
    hasher = KeyHasher(b"pepper")
    record = KeyRecord(id="0123456789ab", name="n", role="user", created=0, secret_hash=hasher.digest("s"))
    assert hasher.matches(record, "s") and not hasher.matches(record, "t")
    assert not hasher.matches(None, "s")
    assert KeyHasher(b"other").digest("s") != hasher.digest("s")  # a stolen Redis dump needs the pepper
    assert "secret_hash" not in record.public() and record.secret_hash not in repr(record)


def test_expiry_and_revocation() -> None:
    record = KeyRecord(id="0123456789ab", name="n", role="user", created=0, expires=100, secret_hash="0" * 64)
    assert record.active(99) and not record.active(100)
    assert not record.model_copy(update={"revoked": 5.0, "expires": None}).active(6)


def test_effective_limits() -> None:
    record = KeyRecord(
        id="0123456789ab", name="n", role="user", created=0, limits=Limits(rpm=5), secret_hash="0" * 64
    )
    assert record.identity(Limits(rpm=600, tpm=1000)).limits == Limits(rpm=5, tpm=1000)
    assert record.identity(Limits()).hashed == hashed("0123456789ab")
    assert anonymous_admin().limits == Limits()


def test_rate_limit_headers() -> None:
    decision = _decision(None, Limits(rpm=10, tpm=1000), req=3, tok=1200, reset_s=17, now=0)
    assert decision.headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "17s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "17s",
    }
    refused = _decision("requests", Limits(rpm=10), req=10, tok=0, reset_s=17, now=0)
    assert refused.headers["retry-after"] == "17" and refused.retry_after_s == 17
    daily = _decision("daily_tokens", Limits(daily_tokens=5), req=1, tok=0, reset_s=17, now=86400 - 30)
    assert daily.retry_after_s == 30


def test_bearer_and_protected_paths() -> None:
    assert bearer({"authorization": "Bearer  rc-x "}) == "rc-x"
    assert bearer({"authorization": "bearer abc"}) == "abc"
    assert bearer({"authorization": "Basic abc"}) == "" and bearer({}) == ""
    assert protected("/v1/models") and protected("/metrics") and protected("/v1")
    assert not protected("/healthz") and not protected("/readyz") and not protected("/openapi.json")


def test_failure_guard_slows_after_free_attempts() -> None:
    guard = FailureGuard(None, free_per_minute=3, delay_s=1.5)  # no Redis: counted in the replica
    assert [asyncio.run(guard.failed("10.0.0.1")) for _ in range(5)] == [0, 0, 0, 1.5, 1.5]
    assert asyncio.run(guard.failed("10.0.0.2")) == 0
    assert client_address({"x-real-ip": "10.1.1.1"}, ("127.0.0.1", 5)) == "10.1.1.1"
    assert client_address({}, ("127.0.0.1", 5)) == "127.0.0.1"


def test_key_bodies() -> None:
    parsed = key_create({"name": "ops", "role": "user", "knowledge_bases": ["docs", "*"], "rpm": 5})
    assert parsed.role == "user" and parsed.rpm == 5
    for body, param in (
        ({"name": "ops", "role": "root"}, "role"),
        ({"name": "", "role": "user"}, "name"),
        ({"name": "ops", "role": "user", "rpm": 0}, "rpm"),
        ({"name": "ops", "role": "user", "rpm": "5"}, "rpm"),
        ({"name": "ops", "role": "user", "knowledge_bases": ["../x"]}, "knowledge_bases[0]"),
        ({"name": "ops", "role": "user", "secret_hash": "x"}, "secret_hash"),
    ):
        with pytest.raises(APIError) as refused:
            key_create(body)
        assert refused.value.status == 400 and refused.value.param == param, body
    with pytest.raises(APIError):
        key_update({})
    assert key_update({"tpm": 10}).model_fields_set == {"tpm"}
