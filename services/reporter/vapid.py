"""The reporter's VAPID key pair (RFC 8292): configured, or generated once into var/vapid.key.

Push services accept a push only when it is signed with the key the browser subscribed with (the
`applicationServerKey`), so the key must stay the same across restarts and replicas: set
GRIDLOOP_VAPID_PRIVATE_KEY when running replicas, as with GRIDLOOP_JWT_SECRET.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02


class VapidKeyError(ValueError):
    """A configured VAPID key that cannot be used (named in the message)."""


def b64url(raw: bytes) -> str:
    """Unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Bytes of unpadded (or padded) base64url text."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class VapidKeys:
    """The signing key and what browsers are given: the public key as an uncompressed P-256 point."""

    signer: Vapid02
    public_key: str
    subject: str


def private_raw(key: ec.EllipticCurvePrivateKey) -> str:
    """A P-256 private key as 32 raw bytes in base64url (the GRIDLOOP_VAPID_PRIVATE_KEY form)."""
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def load_keys(private: str, public: str | None, subject: str) -> VapidKeys:
    """The key pair from a raw base64url private key; a configured public key must be its own."""
    try:
        raw = b64url_decode(private.strip())
        if len(raw) != 32:
            raise ValueError(f"{len(raw)} bytes, not 32")
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise VapidKeyError(
            f"GRIDLOOP_VAPID_PRIVATE_KEY is not a P-256 private key in raw base64url ({exc})"
        ) from exc
    derived = b64url(key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    if public and public.strip() != derived:
        raise VapidKeyError("GRIDLOOP_VAPID_PUBLIC_KEY is not the public key of GRIDLOOP_VAPID_PRIVATE_KEY")
    if not subject.startswith(("mailto:", "https://")):
        raise VapidKeyError("GRIDLOOP_VAPID_SUBJECT must be a mailto: or https: URL (RFC 8292)")
    return VapidKeys(Vapid02(private_key=key), derived, subject)


def vapid_keys(private: str | None, public: str | None, subject: str, var_dir: Path) -> VapidKeys:
    """The configured key pair, else the one in var/vapid.key (generated on first use)."""
    if not private:
        path = var_dir / "vapid.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(private_raw(ec.generate_private_key(ec.SECP256R1())) + "\n")
            path.chmod(0o600)
        private = path.read_text().strip()
        public = None
    return load_keys(private, public, subject)
