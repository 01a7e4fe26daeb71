"""A push service inside the test: HTTPS on loopback, it keeps every push and answers as scripted.

A browser's side is played by `BrowserKeys` (a P-256 key pair and an auth secret made with
`cryptography`, as PushManager.subscribe makes them), which decrypts what arrives with `http_ece`
(aes128gcm, RFC 8291) and checks the VAPID header (RFC 8292), so a test proves real Web Push.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.reporter.vapid import b64url, b64url_decode


@dataclass
class Received:
    """One push as it reached the push service."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class BrowserKeys:
    """A browser's keys of one subscription."""

    private: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth_secret: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        """The public key as PushSubscription.toJSON() gives it."""
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(raw)

    @property
    def auth(self) -> str:
        """The auth secret as PushSubscription.toJSON() gives it."""
        return b64url(self.auth_secret)

    def subscription(self, endpoint: str) -> dict[str, Any]:
        """PushSubscription.toJSON() of this browser at `endpoint`."""
        return {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }

    def decrypt(self, push: Received) -> dict[str, Any]:
        """The JSON a push carries, decrypted as the browser does (aes128gcm)."""
        assert push.headers["content-encoding"] == "aes128gcm"
        plain = http_ece.decrypt(
            push.body, private_key=self.private, auth_secret=self.auth_secret, version="aes128gcm"
        )
        data: dict[str, Any] = json.loads(plain)
        return data


def vapid_claims(push: Received, public_key: str) -> dict[str, Any]:
    """The VAPID JWT's claims, after checking the header names `public_key` and the JWT's ES256
    signature is by it (raises otherwise)."""
    scheme, _, params = push.headers["authorization"].partition(" ")
    assert scheme == "vapid"
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    assert parts["k"] == public_key
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(parts["k"]))
    claims: dict[str, Any] = jwt.decode(
        parts["t"], key, algorithms=["ES256"], options={"verify_aud": False, "require": ["exp", "aud", "sub"]}
    )
    return claims


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for IP 127.0.0.1 signed by it: (CA cert, server cert, server key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "push test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class PushService:
    """The push service: `received` in arrival order; `script[path]` lists the statuses to answer
    in turn (201 once it runs out)."""

    def __init__(self, directory: Path) -> None:
        self.ca, cert, key = make_tls(directory)
        self.received: list[Received] = []
        self.script: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with service._lock:
                    service.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answers = service.script.get(self.path) or []
                    status = answers.pop(0) if answers else 201
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        """The push service's origin (the VAPID audience)."""
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def endpoint(self, name: str) -> str:
        """An endpoint URL of one browser."""
        return f"{self.origin}/push/{name}"

    def pushes(self, name: str) -> list[Received]:
        """What reached one endpoint."""
        with self._lock:
            return [r for r in self.received if r.path == f"/push/{name}"]

    def __enter__(self) -> PushService:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def running_push_service(directory: Path) -> Iterator[PushService]:
    """A started push service (for fixtures)."""
    with PushService(directory) as service:
        yield service
