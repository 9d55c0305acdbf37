"""A test token issuer shaped like a Microsoft Entra ID tenant, served over real HTTP.

It publishes ``/{tenant}/v2.0/.well-known/openid-configuration`` and the ``jwks_uri`` it names
(``/{tenant}/discovery/v2.0/keys``), counts how often each is fetched, and signs access tokens
with its RSA keys the way Entra does (RS256, ``kid`` in the header, v2 claims). It can also
forge what an attacker would send: ``alg: none``, HS256 keyed with the public key, a token
signed by a key it does not publish.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
#: The API's app registration: its client ID, and its application ID URI.
CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
AUDIENCE = f"api://{CLIENT_ID}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class TokenIssuer:
    """The tenant's OpenID configuration and signing keys over HTTP, and its tokens."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {"key-1": new_key()}
        self.published: list[str] = ["key-1"]
        self.hits: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def issuer(self, tenant: str = TENANT) -> str:
        return f"{self.base}/{tenant}/v2.0"

    def jwks_url(self, tenant: str = TENANT) -> str:
        return f"{self.base}/{tenant}/discovery/v2.0/keys"

    def settings(self, *, discover: bool = True) -> dict[str, str]:
        """App settings that trust this issuer (through its OpenID configuration, or a JWKS URL)."""
        values = {"ENTRA_AUDIENCE": f"{AUDIENCE},{CLIENT_ID}", "ENTRA_ISSUER": self.issuer()}
        if not discover:
            values["ENTRA_JWKS_URL"] = self.jwks_url()
        return values

    def rotate_in(self, kid: str) -> None:
        """Publish a new signing key (as Entra announces one before signing with it)."""
        self.keys[kid] = new_key()
        self.published.append(kid)

    def claims(self, roles: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": CLIENT_ID, "iss": self.issuer(), "iat": now, "nbf": now, "exp": now + 3600,
            "tid": TENANT, "oid": str(uuid.uuid4()), "sub": "caller", "ver": "2.0", "azp": str(uuid.uuid4()),
        }
        if roles is not None:
            claims["roles"] = roles
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, roles: list[str] | None = None, *, kid: str = "key-1", key: rsa.RSAPrivateKey | None = None,
              **overrides: Any) -> str:
        """An RS256 token signed by ``key`` (default: the issuer's key ``kid``)."""
        signer = key or self.keys[kid]
        return jwt.encode(self.claims(roles, **overrides), signer, algorithm="RS256", headers={"kid": kid})

    def unsigned_token(self, roles: list[str]) -> str:
        """``alg: none``, no signature."""
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "key-1"}).encode())
        return f"{header}.{_b64(json.dumps(self.claims(roles)).encode())}."

    def hmac_token(self, roles: list[str]) -> str:
        """HS256 keyed with the published public key: the algorithm-confusion forgery."""
        public = self.keys["key-1"].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "key-1"}).encode())
        body = _b64(json.dumps(self.claims(roles)).encode())
        signature = hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(signature)}"

    def _jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "x5t": kid})
        return {"keys": keys}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                tenant, _, rest = self.path.lstrip("/").partition("/")
                if rest == "v2.0/.well-known/openid-configuration":
                    issuer.hits["openid-configuration"] += 1
                    body = {"issuer": issuer.issuer(tenant), "jwks_uri": issuer.jwks_url(tenant),
                            "id_token_signing_alg_values_supported": ["RS256"]}
                elif rest == "discovery/v2.0/keys":
                    issuer.hits["keys"] += 1
                    body = issuer._jwks()
                else:
                    issuer.hits["other"] += 1
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> TokenIssuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def running_issuer() -> Iterator[TokenIssuer]:
    with TokenIssuer() as issuer:
        yield issuer
