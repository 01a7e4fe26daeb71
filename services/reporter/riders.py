"""Riders recognised, the pure part: the rider number's pseudonym and the recognition code.

- A rider may give their platform and rider number (骑手编号) on the report form. Only a keyed
  pseudonym of the pair is stored (`report.rider_no_ref`: HMAC-SHA256 under a key derived from the
  service secret for this one use, 128 bits in hex): the same rider number on the same platform gives
  the same pseudonym, so later tallies per rider can count across phones, while the number itself is
  never stored, logged, shown or published (not even inside the stored request hash).
- The **recognition code** (识别码) on /my is the short form of the rider's pseudonym (`rider_ref`,
  the cookie's): its last six characters, the same tag the console shows for the rider on each case
  they reported. A rider shows it to the street or their platform for 表彰 without giving a name,
  phone or rider number; staff match it against the riders of the cases in the console.
"""

from __future__ import annotations

import hashlib
import hmac

from gridloop.settings import derive_key

RIDER_NUMBER_KEY = "rider-number"
"""The purpose label of the key the rider number's pseudonym is keyed with."""
RECOGNITION_CHARS = 6
"""The recognition code's length: the console's rider tag (services/closer/actions.detail_view)."""


def rider_no_ref(platform: str | None, rider_no: str | None, secret: str) -> str | None:
    """The pseudonym of a platform's rider number (None without a number); the number is normalised
    (trimmed, upper case) so `mt-123 ` and `MT-123` are one rider."""
    number = (rider_no or "").strip().upper()
    if not number:
        return None
    message = f"{platform or ''}\x00{number}".encode()
    return hmac.new(derive_key(secret, RIDER_NUMBER_KEY), message, hashlib.sha256).hexdigest()[:32]


def recognition_code(rider_ref: str | None) -> str | None:
    """The rider's recognition code: the short form of their pseudonym (None without one)."""
    return rider_ref[-RECOGNITION_CHARS:] if rider_ref else None
