"""A stand-in identity provider for tests: a fresh key pair, its public JWKS file, and signed tokens.

`make_issuer(dir, kid="test-2")` on the same directory rotates the key: the file then names the new key only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test/realms/raychat"
AUDIENCE = "raychat"
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}


@dataclass(frozen=True)
class Issuer:
    private_key: Any
    kid: str | None  # None: tokens carry no `kid` header
    alg: str
    jwks_path: Path
    issuer: str = ISSUER
    audience: str = AUDIENCE

    @property
    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def token(
        self,
        sub: str | None = "alice",
        groups: list[str] | str | None = None,
        kbs: list[str] | str | None = None,
        aud: str | list[str] | None = None,
        iss: str | None = None,
        exp_in: float = 300,
        nbf_in: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A signed token; `groups` -> `groups`, `kbs` -> `raychat_kbs`; an `extra` of None drops a claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": iss or self.issuer,
            "aud": aud or self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + int(exp_in),
        }
        if nbf_in is not None:
            claims["nbf"] = now + int(nbf_in)
        if groups is not None:
            claims["groups"] = groups
        if kbs is not None:
            claims["raychat_kbs"] = kbs
        claims.update(extra or {})
        claims = {name: value for name, value in claims.items() if value is not None}
        headers = {"kid": self.kid} if self.kid is not None else None
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers=headers)


def make_issuer(directory: Path, kid: str | None = "test-1", alg: str = "RS256") -> Issuer:
    """A new key pair; writes `<directory>/jwks.json` (public key only, mode 0644, replaced atomically)."""
    if alg in _CURVES:
        private_key: Any = ec.generate_private_key(_CURVES[alg]())
        jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    else:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update({"alg": alg, "use": "sig"} | ({"kid": kid} if kid is not None else {}))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "jwks.json"
    tmp = path.with_name(".jwks.json.tmp")
    tmp.write_text(json.dumps({"keys": [jwk]}))
    os.chmod(tmp, 0o644)  # the gateway may run as another user; the file holds public keys only
    os.replace(tmp, path)  # a refresh never reads half a file
    return Issuer(private_key, kid, alg, path)
