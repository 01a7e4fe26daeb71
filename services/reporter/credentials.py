"""The riders' credentials, pure: signed rider tokens, tracking secrets, and the plain-text rule.

- A **rider token** (the `gl_rider` cookie) is `<random>.<mac>`, issued by this server only: the mac
  is an HMAC of the random part under a key derived from the service secret for this one use. Any
  other cookie value is ignored (the rider gets a fresh token), so made-up cookies make no riders.
- A **tracking secret** (`?k=` in the tracking link) unlocks one report's owner view. It is 128 bits
  derived from the rider's token and the report id under its own key: only the phone holding the
  token (and this server, given that token) can compute it, so a replay of the same request by the
  same rider answers the same link, while the report row keeps only a keyed hash of it.
- The report id stays public (feeds, events, staff): it is never a credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

from pydantic import BaseModel, model_validator

from gridloop.settings import derive_key

_RANDOM_BYTES = 18
_MAC_BYTES = 16
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{24}\.[A-Za-z0-9_-]{22}$")
# C0 controls but tab and newline, DEL, C1 controls, the bidi marks (ALM, LRM, RLM), embeddings,
# overrides and isolates
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _mac(key: bytes, message: str, size: int) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest()[:size])


def new_rider_token(secret: str) -> str:
    """A new rider token, signed by this server."""
    random = _b64(secrets.token_bytes(_RANDOM_BYTES))
    return f"{random}.{_mac(derive_key(secret, 'rider-token'), random, _MAC_BYTES)}"


def valid_rider_token(token: str | None, secret: str) -> bool:
    """True for a token this server issued (a forged, unsigned or mangled one is not)."""
    if not token or not _TOKEN.match(token):
        return False
    random, _, mac = token.partition(".")
    return hmac.compare_digest(mac, _mac(derive_key(secret, "rider-token"), random, _MAC_BYTES))


def tracking_secret(token: str, report_id: str, secret: str) -> str:
    """The tracking secret of a report sent with a rider token (128 bits, URL-safe)."""
    return _mac(derive_key(secret, "tracking-secret"), f"{token}:{report_id}", 16)


def tracking_hash(key: str, secret: str) -> str:
    """How a tracking secret is stored (a keyed hash; the secret itself is never stored)."""
    return hmac.new(derive_key(secret, "tracking-hash"), key.encode(), hashlib.sha256).hexdigest()


def tracking_key_matches(key: str | None, stored: str | None, secret: str) -> bool:
    """True when a presented tracking secret is the one whose hash the report keeps."""
    if not key or not stored or len(key) > 64:
        return False
    return hmac.compare_digest(tracking_hash(key, secret), stored)


def plain(value: str) -> str:
    """Text as stored: control characters (but tab and newline) and bidi marks, embeddings,
    overrides and isolates removed."""
    return _UNSAFE.sub("", value)


def plain_input(value: object) -> object:
    """`plain` for a model field before validation (non-text values are left to the field's type)."""
    return plain(value) if isinstance(value, str) else value


def http_url(value: str | None) -> str | None:
    """A URL that is http(s) with a host, else ValueError (`javascript:` and friends are refused)."""
    if value is None or value == "":
        return None
    lowered = value.lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        raise ValueError("only http and https URLs are accepted")
    host = value.split("://", 1)[1].split("/", 1)[0]
    if not host or any(c.isspace() for c in value):
        raise ValueError("the URL has no host")
    return value


class PlainIn(BaseModel):
    """Base of every rider or integrator input model: its strings are stored `plain`."""

    @model_validator(mode="before")
    @classmethod
    def _plain_strings(cls, data: Any) -> Any:
        """Strip control and bidi characters from every string field before the fields are checked."""
        if isinstance(data, dict):
            return {key: plain_input(value) for key, value in data.items()}
        return data
