"""A small HTTPS OpenID issuer for the workload-identity tests, as a Kubernetes apiserver serves
its ServiceAccount issuer: `/.well-known/openid-configuration` and a JWKS with one ES256 key,
under a CA of its own (the emulator trusts it through `--oidc-ca-cert`). It signs assertions
shaped like projected ServiceAccount tokens. Uses `cryptography` and PyJWT, which azure-identity
already brings."""

from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import ssl
import tempfile
import threading
import time
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

KID = "sa-key-1"
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


def _b64url(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode("ascii")


def _certificates(directory: Path) -> tuple:
    """(ca.pem, server chain file, server key file) for 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test oidc issuer CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = directory / "issuer-ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = directory / "issuer-chain.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    key_file = directory / "issuer-key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, chain, key_file


class Issuer:
    """A running issuer: `url` is its `iss`, `ca_path` the CA the emulator must trust."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.ca_path, chain, key_file = _certificates(Path(self._dir.name))
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        numbers = self._signing_key.public_key().public_numbers()
        jwks = {
            "keys": [
                {
                    "use": "sig", "kty": "EC", "kid": KID, "crv": "P-256", "alg": "ES256",
                    "x": _b64url(numbers.x), "y": _b64url(numbers.y),
                }
            ]
        }
        documents: dict = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = documents.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/json")
                # A length, as the apiserver sends: rustls refuses a TLS body ended by a bare
                # close (no close_notify), which is how http.server ends an unsized one.
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key_file)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        documents["/.well-known/openid-configuration"] = json.dumps(
            {"issuer": self.url, "jwks_uri": f"{self.url}/openid/v1/jwks"}
        ).encode()
        documents["/openid/v1/jwks"] = json.dumps(jwks).encode()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def service_account_token(self, namespace: str, name: str, **overrides) -> str:
        """A projected ServiceAccount token for the exchange audience, valid for an hour."""
        now = int(time.time())
        claims = {
            "aud": [EXCHANGE_AUDIENCE],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": self.url,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name}},
        }
        claims.update(overrides)
        return jwt.encode(claims, self._signing_key, algorithm="ES256", headers={"kid": KID})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._dir.cleanup()
