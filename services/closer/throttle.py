"""Sign-in throttling: exponential backoff per account and per client address, never a lock-out.

Each failed sign-in makes the next attempt under the same key (`user:<name>`, `addr:<address>`)
wait: 1 s, 2 s, 4 s … up to `MAX_WAIT`; an attempt inside the wait is refused (429, Retry-After)
without checking the password, and the right password after the wait works. Unknown usernames are
throttled exactly like known ones, so the answers tell nobody which accounts exist.

Every counter change is one atomic statement: an attempt first *claims* its keys with an upsert that
only succeeds when the key is not waiting, counts the attempt as a failure in advance and holds the
key for `HOLD` while the password is checked. Parallel guesses therefore queue behind the claim's
row lock and see the hold (429), instead of all reading the same old counter.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from gridloop.rawsql import Bind, Raw, read_ts, statement

BASE_WAIT = 1.0
MAX_WAIT = 300.0
HOLD = timedelta(seconds=30)  # longer than any password check; a crash mid-check costs this much
FORGET_AFTER = timedelta(hours=1)  # a key quiet this long starts again at its first failure


def wait_after(failures: int) -> float:
    """Seconds the next attempt waits after this many failures in a row (0 for none)."""
    if failures <= 0:
        return 0.0
    return min(BASE_WAIT * 2 ** min(failures - 1, 30), MAX_WAIT)


def account_key(username: str) -> str:
    """The throttle key of an account name (known or not: both are throttled alike)."""
    return "user:" + username[:100]


def address_key(address: str) -> str:
    """The throttle key of a client address."""
    return "addr:" + address[:100]


# The claim: insert a first attempt, or count one more when the key is not waiting (the WHERE of the
# upsert); no row back means the key is waiting. On PostgreSQL a parallel claim blocks on the row
# lock, then re-reads the row and sees the hold.
_CLAIM = statement(
    "INSERT INTO login_throttle (key, failures, last_at, next_at) VALUES (:key, 1, :now, :hold) "
    "ON CONFLICT (key) DO UPDATE SET "
    "failures = CASE WHEN login_throttle.last_at < :forget THEN 1 ELSE login_throttle.failures + 1 END, "
    "last_at = :now, next_at = :hold "
    "WHERE login_throttle.next_at <= :now "
    "RETURNING failures"
)
_NEXT_AT = statement("SELECT next_at FROM login_throttle WHERE key = :key")
_FAILED = statement("UPDATE login_throttle SET next_at = :next WHERE key = :key AND failures = :failures")
_FORGET = statement("DELETE FROM login_throttle WHERE key = :key")
# a success from an address takes back the failure its claim counted in advance
_SUCCEEDED = statement(
    "UPDATE login_throttle SET next_at = :now, "
    "failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END WHERE key = :key"
)
_SWEEP = statement("DELETE FROM login_throttle WHERE last_at < :forget AND next_at <= :now")


class Throttled(Exception):
    """A key is waiting: try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


def claim(bind: Bind, keys: list[str], now: datetime) -> dict[str, int]:
    """Claim an attempt for every key (failures so far, this one included); Throttled when any key
    is waiting (the caller rolls back the transaction, so no key stays claimed)."""
    raw = Raw(bind)
    counts: dict[str, int] = {}
    for key in keys:
        params = {
            "key": key,
            "now": raw.ts(now),
            "hold": raw.ts(now + HOLD),
            "forget": raw.ts(now - FORGET_AFTER),
        }
        row = raw.first(_CLAIM, params)
        if row is None:
            raise Throttled(_retry_after(raw, key, now))
        counts[key] = int(row[0])
    return counts


def _retry_after(raw: Raw, key: str, now: datetime) -> int:
    next_at = read_ts(raw.scalar(_NEXT_AT, {"key": key}))
    seconds = (next_at - now).total_seconds() if next_at is not None else BASE_WAIT
    return max(1, math.ceil(seconds))


def failed(bind: Bind, counts: dict[str, int], now: datetime) -> None:
    """The password was wrong: each key waits by its count (set where the claim left it)."""
    raw = Raw(bind)
    for key, failures in counts.items():
        next_at = now + timedelta(seconds=wait_after(failures))
        raw.run(_FAILED, {"key": key, "next": raw.ts(next_at), "failures": failures})
    raw.run(_SWEEP, {"forget": raw.ts(now - FORGET_AFTER), "now": raw.ts(now)})


def succeeded(bind: Bind, account: str, address: str | None, now: datetime) -> None:
    """The password was right: the account starts afresh; the address takes back this attempt only
    (an attacker with one good account cannot wipe the failures of their address)."""
    raw = Raw(bind)
    raw.run(_FORGET, {"key": account})
    if address is not None:
        raw.run(_SUCCEEDED, {"key": address, "now": raw.ts(now)})


def release(bind: Bind, key: str) -> None:
    """Forget a key's failures (an admin lifting the wait of an account)."""
    Raw(bind).run(_FORGET, {"key": key})
