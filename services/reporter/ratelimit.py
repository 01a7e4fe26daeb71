"""Rate limits on intake: per report code, per rider token and per client address.

Where the counts live: in the reporter's own database, counted from the `report` table itself
(sliding windows over `submitted_at`, indexed per key). Every replica reads the same rows, so the
limits hold for the whole deployment, not per process, and a restart forgets nothing; there is no
extra store to run. The check runs inside the intake's write transaction: on SQLite writers are
serialised, so the count is exact; on PostgreSQL two concurrent requests for one key may both pass
at the edge (at most one report per concurrent request over the limit), which is acceptable for
abuse control. Only accepted reports count, so a rider who made a typo is never locked out, and a
replayed Idempotency-Key is answered before any limit is checked (a retry is never "too many").

A fourth limit counts **new riders** per address: distinct riders whose first report ever
(`new_rider`) came from the address in the window, so throwing the cookie away (or collecting
fresh tokens from the pages) to look like other riders ("three distinct riders") runs out quickly,
while a rider already counted keeps reporting.

The address is the client's (gridloop.net: the forwarded address only from a trusted proxy), keyed
per IPv4 address or IPv6 /64, and hashed with the service secret before it is stored
(`client_ref`), like the rider token. Mobile carriers put many riders behind one address
(carrier-grade NAT), so the per-address limits are the loosest. A loopback address is not limited:
it is a reverse proxy on the same host that did not pass X-Forwarded-For (limiting it would throttle
every rider at once) or a local tool; the per-code and per-rider limits still apply to it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from gridloop.clock import as_utc
from gridloop.net import address_key
from gridloop.rawsql import Bind, Raw, read_ts, statement
from gridloop.settings import derive_key
from services.reporter.config import RateLimits


@dataclass(frozen=True)
class Limit:
    """One limit to check: its name, the report column and value it counts, and how many are allowed."""

    name: str
    allowed: int
    column: Literal["code", "rider_ref", "client_ref"]
    value: str


@dataclass(frozen=True)
class Verdict:
    """The outcome: allowed, or which limit was hit and when to try again."""

    allowed: bool
    limit: str | None = None
    retry_after: int = 0


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (a local proxy or tool, see the module notes)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def client_ref_for(address: str | None, secret: str) -> str | None:
    """A pseudonym for a client address, keyed per IPv4 address or IPv6 /64 (the address itself is
    not stored); None for loopback."""
    key = address_key(address)
    if not key or not address or is_loopback(address):
        return None
    return hmac.new(derive_key(secret, "address-pseudonym"), key.encode(), hashlib.sha256).hexdigest()[:32]


def retry_after(recent: Sequence[datetime], allowed: int, window: timedelta, now: datetime) -> int | None:
    """Seconds until one more is allowed, given the newest timestamps first; None when allowed now."""
    if allowed <= 0 or len(recent) < allowed:
        return None
    # the request fits once the allowed-th newest entry has left the window
    frees_at = as_utc(recent[allowed - 1]) + window
    return max(1, math.ceil((frees_at - now).total_seconds()))


def limits_for(
    config: RateLimits, code: str | None, rider_ref: str | None, client_ref: str | None
) -> list[Limit]:
    """The limits that apply to one request."""
    out: list[Limit] = []
    if code and config.per_code > 0:
        out.append(Limit("code", config.per_code, "code", code))
    if rider_ref and config.per_rider > 0:
        out.append(Limit("rider", config.per_rider, "rider_ref", rider_ref))
    if client_ref and config.per_address > 0:
        out.append(Limit("address", config.per_address, "client_ref", client_ref))
    return out


_RECENT = {
    column: statement(
        f"SELECT submitted_at FROM report WHERE {column} = :value AND submitted_at > :since "
        "ORDER BY submitted_at DESC LIMIT :n"
    )
    for column in ("code", "rider_ref", "client_ref")
}
"""The newest reports of one code, rider or address, by the column a limit counts."""
_NEW_RIDERS = statement(
    "SELECT submitted_at FROM report WHERE client_ref = :value AND new_rider = :yes "
    "AND submitted_at > :since ORDER BY submitted_at DESC LIMIT :n"
)
"""The first reports of new riders from one address in the window, newest first."""


def check(session: Bind, config: RateLimits, limits: Sequence[Limit], now: datetime) -> Verdict:
    """Count recent reports for each limit; the first one exceeded decides (longest wait wins)."""
    window = timedelta(seconds=config.window_seconds)
    worst: Verdict = Verdict(True)
    if not limits:
        return worst
    raw = Raw(session)
    for limit in limits:
        # an index per column, (column, submitted_at): a range scan of at most `allowed` entries
        rows = raw.all(
            _RECENT[limit.column], {"value": limit.value, "since": raw.ts(now - window), "n": limit.allowed}
        )
        recent = [t for (value,) in rows if (t := read_ts(value)) is not None]
        wait = retry_after(recent, limit.allowed, window, now)
        if wait is not None and wait > worst.retry_after:
            worst = Verdict(False, limit.name, wait)
    return worst


def check_new_rider(session: Bind, config: RateLimits, client_ref: str | None, now: datetime) -> Verdict:
    """The new-riders-per-address limit, for a rider's first report: is there room for one more?"""
    allowed = config.new_riders_per_address
    if allowed <= 0 or client_ref is None:
        return Verdict(True)
    window = timedelta(seconds=config.window_seconds)
    raw = Raw(session)
    params = {"value": client_ref, "since": raw.ts(now - window), "yes": True, "n": allowed}
    recent = [t for (value,) in raw.all(_NEW_RIDERS, params) if (t := read_ts(value)) is not None]
    wait = retry_after(recent, allowed, window, now)
    return Verdict(True) if wait is None else Verdict(False, "new_riders", wait)
