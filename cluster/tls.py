"""raychat's private CA and the certificates each plane needs, under `<data_dir>/tls/`.

`ensure` (run by `up`) creates what is missing and re-issues a certificate that is close to expiry, was
signed by another CA, or lacks a name the settings now require; a second call changes nothing. The edge
uses the site's own certificate instead when `tls.site_cert` and `tls.site_key` are set. Files are
replaced atomically, keys are mode 0600 from creation, and no key material is ever printed or logged.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.settings import RaychatSettings

KEY_MODE, CERT_MODE, DIR_MODE = 0o600, 0o644, 0o700
# Certificates start a little in the past: a node whose clock lags behind must accept them too.
BACKDATE = timedelta(minutes=5)
SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
MISSING = "missing"
SERVE_NAME = "raychat-serve"  # the name Nginx and Traefik verify on Serve's certificate
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class TLSError(ValueError):
    """TLS settings or files that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class TLSFiles:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path  # the site's own files when tls.site_cert/tls.site_key are set
    server_key: Path
    serve_cert: Path
    serve_key: Path
    ingress_client_cert: Path
    ingress_client_key: Path
    ray_cert: Path
    ray_key: Path
    redis_cert: Path
    redis_key: Path


@dataclass(frozen=True)
class _Leaf:
    cert: Path
    key: Path
    common_name: str
    usages: tuple[x509.ObjectIdentifier, ...]
    names: tuple[x509.GeneralName, ...]


def paths(settings: RaychatSettings) -> TLSFiles:
    """Where every file is (or will be); no I/O."""
    tls, d = settings.tls, settings.tls_dir
    if tls.site_cert is not None and tls.site_key is not None:
        server_cert, server_key = tls.site_cert.expanduser(), tls.site_key.expanduser()
    elif tls.site_cert is None and tls.site_key is None:
        server_cert, server_key = d / "server.crt", d / "server.key"
    else:
        unset = "tls.site_key" if tls.site_key is None else "tls.site_cert"
        raise TLSError(
            f"{unset} is not set: tls.site_cert and tls.site_key go together (set both or neither)"
        )
    # serve, ingress-client, ray-node, redis: a .crt and a .key each, in TLSFiles' field order.
    generated = [
        d / f"{n}.{ext}" for n in ("serve", "ingress-client", "ray-node", "redis") for ext in ("crt", "key")
    ]
    return TLSFiles(d, d / "ca.crt", d / "ca.key", server_cert, server_key, *generated)


def ensure(settings: RaychatSettings, now: datetime | None = None) -> tuple[TLSFiles, list[str]]:
    """Create or renew what is needed; returns the files and one line per file created or renewed."""
    files = paths(settings)
    now = datetime.now(UTC) if now is None else now if now.tzinfo else now.replace(tzinfo=UTC)
    tls = settings.tls
    if tls.site_cert is not None:
        _check_site(files.server_cert, files.server_key)  # before writing anything: fail early and clean
    files.dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if files.dir.stat().st_mode & 0o777 != DIR_MODE:  # mkdir's mode is subject to the umask
        files.dir.chmod(DIR_MODE)
    done: list[str] = []
    ca = _usable_ca(files, now, tls.renew_before_days)
    if isinstance(ca, str):
        reason, ca = ca, _new_ca(now, tls.ca_days)
        _save(files.ca_cert, files.ca_key, *ca)
        done.append(_line(files.ca_cert, reason, "the private CA "))
    for leaf in _leaves(settings, files):
        if reason := _leaf_problem(leaf, ca[0], now, tls.renew_before_days):
            key = ec.generate_private_key(ec.SECP256R1())
            _save(leaf.cert, leaf.key, _issue(leaf, key.public_key(), *ca, now, tls.cert_days), key)
            done.append(_line(leaf.cert, reason))
    return files, done


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the (first) certificate in the file, as colon-separated hex."""
    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def trust_hint(files: TLSFiles, url: str) -> str:
    """How a client trusts raychat's private CA."""
    ca, base = _show(files.ca_cert), url.rstrip("/")
    api = base if base.endswith("/v1") else f"{base}/v1"
    return "\n".join(
        [
            f"Clients trust raychat's private CA {ca} (SHA-256 {fingerprint(files.ca_cert)}):",
            f"  curl --cacert {ca} {base}/...",
            f"  SSL_CERT_FILE={ca} python app.py   # Python's ssl, httpx and the openai client",
            f'  openai.OpenAI(base_url="{api}", '
            f'http_client=httpx.Client(verify=ssl.create_default_context(cafile="{ca}")))',
        ]
    )


def _leaves(settings: RaychatSettings, files: TLSFiles) -> list[_Leaf]:
    """What each generated certificate is for and the names it must carry."""
    loopback = ["localhost", "127.0.0.1"]
    # Only plain addresses name a node; a CIDR cannot go into a certificate.
    cluster_ips = [a for a in settings.firewall.cluster_addresses if _ip(a)]
    ray = settings.ray.host
    # The ingress checks Serve's certificate against SERVE_NAME wherever Serve's proxies run.
    serve_names = _names([SERVE_NAME, *loopback, settings.serve.host, ray, *cluster_ips])
    ingress = _names(["raychat-ingress"])
    leaves = [
        _Leaf(files.serve_cert, files.serve_key, "raychat-serve", (SERVER,), serve_names),
        # The name in a SAN too: strict client verifiers (cryptography's among them) require one.
        _Leaf(files.ingress_client_cert, files.ingress_client_key, "raychat-ingress", (CLIENT,), ingress),
        # One certificate for every Ray node: each end of a gRPC channel is both server and client.
        _Leaf(
            files.ray_cert,
            files.ray_key,
            "raychat-ray-node",
            (SERVER, CLIENT),
            _names([*loopback, ray, *cluster_ips]),
        ),
        _Leaf(files.redis_cert, files.redis_key, "raychat-redis", (SERVER,), _names(loopback)),
    ]
    if settings.tls.site_cert is None:
        edge = [*loopback, "::1", settings.ingress.host, *settings.tls.hostnames]
        leaves.insert(0, _Leaf(files.server_cert, files.server_key, "raychat-edge", (SERVER,), _names(edge)))
    return leaves


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))  # [::1] as written in URLs
    except ValueError:
        return None


def _names(hosts: list[str]) -> tuple[x509.GeneralName, ...]:
    """SAN entries, in order, without duplicates; an IP if it parses as one, else a DNS name."""
    names: list[x509.GeneralName] = []
    for raw in filter(str.strip, hosts):
        host, ip = raw.strip().rstrip(".").lower(), _ip(raw)
        name: x509.GeneralName
        if ip is not None:
            if ip.is_unspecified:  # 0.0.0.0 / :: is where a server binds, never what a client dials
                continue
            name = x509.IPAddress(ip)
        elif host.isascii():
            name = x509.DNSName(host)
        else:
            raise TLSError(f"{raw!r} cannot go into a certificate: use an IP or an ASCII (punycode) DNS name")
        if name not in names:
            names.append(name)
    return tuple(names)


def _read_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKeyTypes] | str:
    """The certificate and its key, or why they cannot be used as they are."""
    if not cert_path.is_file() or not key_path.is_file():
        return MISSING
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        return "unreadable"
    if _spki(key.public_key()) != _spki(cert.public_key()):
        return "its key does not match"
    return cert, key


def _usable_ca(
    files: TLSFiles, now: datetime, renew_before_days: int
) -> tuple[x509.Certificate, SigningKey] | str:
    pair = _read_pair(files.ca_cert, files.ca_key)
    if isinstance(pair, str):
        return pair
    if not isinstance(pair[1], SigningKey):
        return "its key cannot sign"
    return _expiry_problem(pair[0], now, renew_before_days) or (pair[0], pair[1])


def _expiry_problem(cert: x509.Certificate, now: datetime, renew_before_days: int) -> str | None:
    left = cert.not_valid_after_utc - now
    # At most half the lifetime: a short-lived certificate is not re-issued on every call.
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    if left > min(timedelta(days=renew_before_days), life / 2):
        return None
    return f"expires in {left.days} days" if left > timedelta(0) else "expired"


def _leaf_problem(leaf: _Leaf, ca: x509.Certificate, now: datetime, renew_before_days: int) -> str | None:
    pair = _read_pair(leaf.cert, leaf.key)
    if isinstance(pair, str):
        return pair
    cert = pair[0]
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    if problem := _expiry_problem(cert, now, renew_before_days):
        return problem
    have = _extension(cert, x509.SubjectAlternativeName)
    if lacking := [str(name.value) for name in leaf.names if name not in have]:
        return f"without {', '.join(lacking)}"
    return None if _extension(cert, x509.ExtendedKeyUsage) == set(leaf.usages) else "other key usages"


def _extension(
    cert: x509.Certificate, kind: type[x509.SubjectAlternativeName | x509.ExtendedKeyUsage]
) -> set:
    try:
        return set(cert.extensions.get_extension_for_class(kind).value)
    except x509.ExtensionNotFound:
        return set()


def _new_ca(now: datetime, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix: two installs' CAs are told apart by name, not only by fingerprint.
    cn = x509.NameAttribute(NameOID.COMMON_NAME, f"raychat private CA {secrets.token_hex(3)}")
    name = x509.Name([cn, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raychat")])
    extensions = [x509.BasicConstraints(ca=True, path_length=0), _key_usage(cert_sign=True)]
    return _sign(name, key.public_key(), name, key, now, now + timedelta(days=days), extensions), key


def _issue(
    leaf: _Leaf,
    public_key: CertificatePublicKeyTypes,
    ca: x509.Certificate,
    ca_key: SigningKey,
    now: datetime,
    days: int,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf.common_name)])
    # Never past the CA's own expiry: the CA is renewed (and every leaf with it) before that.
    not_after = min(now + timedelta(days=days), ca.not_valid_after_utc)
    extensions: list[x509.ExtensionType] = [
        x509.BasicConstraints(ca=False, path_length=None),
        _key_usage(cert_sign=False),
        x509.ExtendedKeyUsage(list(leaf.usages)),
    ]
    if leaf.names:
        extensions.append(x509.SubjectAlternativeName(list(leaf.names)))
    return _sign(subject, public_key, ca.subject, ca_key, now, not_after, extensions)


def _sign(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    issuer_key: SigningKey,
    now: datetime,
    not_after: datetime,
    extensions: list[x509.ExtensionType],
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        # The CA's key identifier is made the same way: the AKI of a leaf matches the CA's SKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    # Basic constraints and key usage are critical (RFC 5280); the rest is informative.
    for ext in extensions:
        builder = builder.add_extension(ext, critical=isinstance(ext, x509.BasicConstraints | x509.KeyUsage))
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    # A CA only signs certificates (and CRLs); an EC leaf only makes signatures in the handshake.
    # (digital_signature, content_commitment, key_encipherment, data_encipherment, key_agreement,
    #  key_cert_sign, crl_sign, encipher_only, decipher_only)
    return x509.KeyUsage(not cert_sign, False, False, False, False, cert_sign, cert_sign, False, False)


def _check_site(cert_path: Path, key_path: Path) -> None:
    for setting, path in (("tls.site_cert", cert_path), ("tls.site_key", key_path)):
        if not path.is_file():
            raise TLSError(f"{setting}: {path} does not exist")
    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    except ValueError:
        raise TLSError(f"tls.site_cert: {cert_path} is not a PEM certificate") from None
    try:
        key = load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):  # `from None`: nothing about the key's contents travels on
        raise TLSError(f"tls.site_key: {key_path} is not an unencrypted PEM private key") from None
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise TLSError(
            f"tls.site_key: {key_path} does not match the certificate in tls.site_cert ({cert_path})"
        )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _save(cert_path: Path, key_path: Path, cert: x509.Certificate, key: SigningKey) -> None:
    # The key first: a reader never finds a new certificate next to the old key.
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    _write(key_path, pem, KEY_MODE)
    _write(cert_path, cert.public_bytes(Encoding.PEM), CERT_MODE)


def _line(path: Path, reason: str, what: str = "") -> str:
    return f"created {what}{_show(path)}" if reason == MISSING else f"renewed {what}{_show(path)} ({reason})"


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic: a temp file in the same directory, with its final mode from creation, then renamed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may have taken bits off
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _show(path: Path) -> str:
    """A path as the user typed it: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
