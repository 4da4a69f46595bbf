"""`cluster.tls`: the private CA and every plane's certificates, with real keys, files and a TLS handshake."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from cluster import tls
from cluster.settings import RaychatSettings, load_settings

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("RAYCHAT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray ./raychat.yaml; paths in messages are relative to it


def _settings(tmp_path: Path, **overrides: Any) -> RaychatSettings:
    return load_settings(None, data_dir=tmp_path / "data", **overrides)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> set[x509.GeneralName]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def _ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _ip(text: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_address(text))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _leaf_certs(files: tls.TLSFiles) -> list[Path]:
    return [files.server_cert, files.serve_cert, files.ingress_client_cert, files.ray_cert, files.redis_cert]


def test_paths_does_no_io(tmp_path: Path) -> None:
    files = tls.paths(_settings(tmp_path))
    assert files.dir == tmp_path / "data" / "tls" and not files.dir.exists()
    assert (files.ray_cert.name, files.ingress_client_key.name) == ("ray-node.crt", "ingress-client.key")


def test_creates_every_file_with_private_modes(tmp_path: Path) -> None:
    files, done = tls.ensure(_settings(tmp_path))
    assert done == [
        "created the private CA data/tls/ca.crt",
        "created data/tls/server.crt",
        "created data/tls/serve.crt",
        "created data/tls/ingress-client.crt",
        "created data/tls/ray-node.crt",
        "created data/tls/redis.crt",
    ]
    assert _mode(files.dir) == 0o700
    keys = [files.ca_key, files.server_key, files.serve_key, files.ingress_client_key, files.ray_key]
    assert all(_mode(k) == 0o600 for k in [*keys, files.redis_key])
    assert all(_mode(c) == 0o644 for c in [files.ca_cert, *_leaf_certs(files)])
    assert not [p for p in files.dir.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_ca_is_a_constrained_private_ca(tmp_path: Path) -> None:
    files, _ = tls.ensure(_settings(tmp_path))
    ca = _cert(files.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.startswith("raychat private CA ")
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "raychat"
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=3650)


def test_every_leaf_chains_to_the_ca_with_its_names_and_usages(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        ingress={"host": "edge.example.com"},
        ray={"host": "10.0.0.1"},
        firewall={"cluster_addresses": ["10.0.0.2", "10.0.1.0/24"]},
    )
    files, _ = tls.ensure(settings)
    store = Store([_cert(files.ca_cert)])
    localhost = x509.DNSName("localhost")
    expected = {
        files.server_cert: (
            {SERVER},
            {localhost, _ip("127.0.0.1"), _ip("::1"), x509.DNSName("edge.example.com")},
        ),
        files.serve_cert: (
            {SERVER},
            {x509.DNSName("raychat-serve"), localhost, _ip("127.0.0.1"), _ip("10.0.0.1"), _ip("10.0.0.2")},
        ),
        files.ingress_client_cert: ({CLIENT}, {x509.DNSName("raychat-ingress")}),
        files.ray_cert: ({SERVER, CLIENT}, {localhost, _ip("127.0.0.1"), _ip("10.0.0.1"), _ip("10.0.0.2")}),
        files.redis_cert: ({SERVER}, {localhost, _ip("127.0.0.1")}),
    }
    for path, (ekus, sans) in expected.items():
        leaf = _cert(path)
        assert (_ekus(leaf), _sans(leaf)) == (ekus, sans), path.name
        assert (
            timedelta(days=396) < leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=398)
        )
        if SERVER in ekus:
            for name in sans:
                PolicyBuilder().store(store).build_server_verifier(name).verify(leaf, [])
        if CLIENT in ekus:
            PolicyBuilder().store(store).build_client_verifier().verify(leaf, [])
    client = _cert(files.ingress_client_cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "raychat-ingress"
    with pytest.raises(x509.verification.VerificationError):  # a client certificate is not a server's
        PolicyBuilder().store(store).build_server_verifier(localhost).verify(client, [])


def test_second_call_changes_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files, _ = tls.ensure(settings)
    before = _snapshot(files.dir)
    assert tls.ensure(settings)[1] == []
    assert _snapshot(files.dir) == before


def test_renews_leaves_close_to_expiry_and_keeps_the_ca(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files, _ = tls.ensure(settings)
    ca_before, serve_before = files.ca_cert.read_bytes(), files.serve_key.read_bytes()
    later = _cert(files.serve_cert).not_valid_after_utc - timedelta(days=12)
    done = tls.ensure(settings, now=later)[1]
    assert "renewed data/tls/serve.crt (expires in 12 days)" in done
    assert len(done) == 5 and all(line.startswith("renewed data/tls/") for line in done)
    assert files.ca_cert.read_bytes() == ca_before and files.serve_key.read_bytes() != serve_before
    assert _cert(files.serve_cert).not_valid_after_utc > later + timedelta(days=300)
    store = Store([_cert(files.ca_cert)])
    verifier = PolicyBuilder().store(store).time(later).build_server_verifier(x509.DNSName("localhost"))
    verifier.verify(_cert(files.serve_cert), [])
    assert tls.ensure(settings, now=later)[1] == []


def test_a_ca_close_to_expiry_is_replaced_with_every_leaf(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    files, _ = tls.ensure(settings)
    old_ca = _cert(files.ca_cert)
    later = old_ca.not_valid_after_utc - timedelta(days=5)
    done = tls.ensure(settings, now=later)[1]
    assert done[0] == "renewed the private CA data/tls/ca.crt (expires in 5 days)"
    assert len(done) == 6 and all(line.startswith("renewed data/tls/") for line in done[1:])
    new_ca = _cert(files.ca_cert)
    assert new_ca.subject != old_ca.subject
    for path in _leaf_certs(files):
        _cert(path).verify_directly_issued_by(new_ca)


def test_a_new_hostname_reissues_the_edge_certificate_only(tmp_path: Path) -> None:
    files, _ = tls.ensure(_settings(tmp_path))
    before = _snapshot(files.dir)
    settings = _settings(tmp_path, tls={"hostnames": ["Chat.Example.com", "192.0.2.7"]})
    assert tls.ensure(settings)[1] == ["renewed data/tls/server.crt (without chat.example.com, 192.0.2.7)"]
    after = _snapshot(files.dir)
    assert {name for name in before if before[name] != after[name]} == {"server.crt", "server.key"}
    assert {x509.DNSName("chat.example.com"), _ip("192.0.2.7")} <= _sans(_cert(files.server_cert))


def test_a_new_ray_host_reissues_serve_and_ray_certificates(tmp_path: Path) -> None:
    tls.ensure(_settings(tmp_path))
    done = tls.ensure(_settings(tmp_path, ray={"host": "10.9.8.7"}))[1]
    assert done == [
        "renewed data/tls/serve.crt (without 10.9.8.7)",
        "renewed data/tls/ray-node.crt (without 10.9.8.7)",
    ]


def _site_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A certificate from the site's own (throwaway) CA, its key, and a key that is not its."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.example.com")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Site CA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=90))
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = (serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "site.crt").write_bytes(cert.public_bytes(pem))
    (tmp_path / "site.key").write_bytes(key.private_bytes(pem, *private))
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.key").write_bytes(other.private_bytes(pem, *private))
    return tmp_path / "site.crt", tmp_path / "site.key", tmp_path / "other.key"


def test_the_site_certificate_replaces_the_generated_edge_one(tmp_path: Path) -> None:
    site_cert, site_key, _ = _site_pair(tmp_path)
    files, done = tls.ensure(_settings(tmp_path, tls={"site_cert": site_cert, "site_key": site_key}))
    assert (files.server_cert, files.server_key) == (site_cert, site_key)
    assert not (files.dir / "server.crt").exists()
    assert "created data/tls/server.crt" not in done and "created data/tls/serve.crt" in done


@pytest.mark.parametrize(
    ("site", "setting"),
    [
        ({"site_cert": "site.crt", "site_key": "other.key"}, "tls.site_key"),
        ({"site_cert": "site.crt"}, "tls.site_key"),
        ({"site_key": "site.key"}, "tls.site_cert"),
        ({"site_cert": "missing.crt", "site_key": "site.key"}, "tls.site_cert"),
    ],
)
def test_unusable_site_files_name_the_setting(tmp_path: Path, site: dict[str, str], setting: str) -> None:
    _site_pair(tmp_path)
    settings = _settings(tmp_path, tls={k: tmp_path / v for k, v in site.items()})
    with pytest.raises(tls.TLSError, match=setting):
        tls.ensure(settings)
    assert not (tmp_path / "data" / "tls").exists()  # checked before anything is written


def test_fingerprint_and_trust_hint(tmp_path: Path) -> None:
    files, _ = tls.ensure(_settings(tmp_path))
    digest = _cert(files.ca_cert).fingerprint(hashes.SHA256()).hex(":").upper()
    assert tls.fingerprint(files.ca_cert) == digest and len(digest) == 95
    hint = tls.trust_hint(files, "https://127.0.0.1:8443")
    assert "curl --cacert data/tls/ca.crt https://127.0.0.1:8443" in hint
    assert "SSL_CERT_FILE=data/tls/ca.crt" in hint and 'cafile="data/tls/ca.crt"' in hint
    assert "http_client=" in hint and digest in hint and "PRIVATE KEY" not in hint


def _serve_once(context: ssl.SSLContext, listener: socket.socket, outcome: dict[str, object]) -> None:
    """Accept one connection, handshake, answer; record what happened."""
    try:
        conn, _ = listener.accept()
        conn.settimeout(5)
        with context.wrap_socket(conn, server_side=True) as tls_conn:
            outcome["peer"] = tls_conn.getpeercert()
            tls_conn.sendall(b"ok")
    except (ssl.SSLError, OSError) as exc:
        outcome["error"] = exc


def _handshake(files: tls.TLSFiles, client_cert: bool) -> tuple[dict[str, object], bytes | Exception]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.serve_cert, files.serve_key)
    server.load_verify_locations(files.ca_cert)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    if client_cert:
        client.load_cert_chain(files.ingress_client_cert, files.ingress_client_key)
    outcome: dict[str, object] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        thread = threading.Thread(target=_serve_once, args=(server, listener, outcome), daemon=True)
        thread.start()
        answer: bytes | Exception
        try:
            with socket.create_connection(listener.getsockname(), timeout=5) as raw:
                with client.wrap_socket(raw, server_hostname="localhost") as conn:
                    answer = conn.recv(16)  # TLS 1.3: a refused client certificate shows up here
        except (ssl.SSLError, OSError) as exc:
            answer = exc
        thread.join(timeout=10)
    assert not thread.is_alive()
    return outcome, answer


def test_serve_accepts_the_ingress_client_certificate_over_tls(tmp_path: Path) -> None:
    files, _ = tls.ensure(_settings(tmp_path))
    outcome, answer = _handshake(files, client_cert=True)
    assert answer == b"ok" and "error" not in outcome
    peer = outcome["peer"]
    assert isinstance(peer, dict) and (("commonName", "raychat-ingress"),) in peer["subject"]


def test_serve_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    files, _ = tls.ensure(_settings(tmp_path))
    outcome, answer = _handshake(files, client_cert=False)
    assert isinstance(outcome.get("error"), ssl.SSLError) and "peer" not in outcome
    assert answer != b"ok"
