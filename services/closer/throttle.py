"""Sign-in throttling: exponential backoff per account and per client address, never a lock-out.

Each failed sign-in makes the next attempt under the same key (`user:<name>`, `addr:<address>`)
wait: 1 s, 2 s, 4 s … up to `MAX_WAIT`; an attempt inside the wait is refused (429, Retry-After)
without checking the password, and the right password after the wait works. Unknown usernames are
throttled exactly like known ones, so the answers tell nobody which accounts exist.

Every counter change is one atomic statement, never a read-modify-write. An attempt first *claims*
its keys (an upsert whose WHERE admits it only when the key is not waiting and fewer than `limit`
checks of that key are under way); parallel claims queue behind the row lock and re-read the row.
An account admits one check at a time, so parallel guesses at one account are checked one by one:
the first failure makes the rest wait. An address admits a few (colleagues behind one office NAT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from gridloop.rawsql import Bind, Raw, read_ts, statement

BASE_WAIT = 1.0
MAX_WAIT = 300.0
ACCOUNT_PARALLEL = 1  # one password check per account at a time: no parallel guessing
ADDRESS_PARALLEL = 4  # a few colleagues behind one address sign in at once
STUCK_AFTER = timedelta(seconds=30)  # a claim this old without an outcome died with its process
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


_CLAIM = statement(
    "INSERT INTO login_throttle (key, failures, pending, last_at, next_at) VALUES (:key, 0, 1, :now, :now) "
    "ON CONFLICT (key) DO UPDATE SET "
    "failures = CASE WHEN login_throttle.last_at < :forget THEN 0 ELSE login_throttle.failures END, "
    "pending = CASE WHEN login_throttle.last_at < :stuck THEN 1 ELSE login_throttle.pending + 1 END, "
    "last_at = :now "
    "WHERE login_throttle.next_at <= :now "
    "AND (login_throttle.pending < :limit OR login_throttle.last_at < :stuck) "
    "RETURNING failures"
)
_NEXT_AT = statement("SELECT next_at FROM login_throttle WHERE key = :key")
_FAILED = statement(
    "UPDATE login_throttle SET failures = failures + 1, last_at = :now, "
    "pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END WHERE key = :key RETURNING failures"
)
# the longest wait wins when several checks of an address end together
_WAIT = statement("UPDATE login_throttle SET next_at = :next WHERE key = :key AND next_at < :next")
_DONE = statement(
    "UPDATE login_throttle SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END WHERE key = :key"
)
_FORGET = statement("DELETE FROM login_throttle WHERE key = :key")
_SWEEP = statement("DELETE FROM login_throttle WHERE last_at < :forget AND next_at <= :now")


class Throttled(Exception):
    """A key refused the claim: it waits `retry_after` seconds, or (None) its checks are all busy."""

    def __init__(self, retry_after: int | None) -> None:
        super().__init__(f"retry after {retry_after} s" if retry_after else "busy")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Claim:
    """The keys an attempt holds: its account's, and its address's when known."""

    account: str
    address: str | None

    @property
    def keys(self) -> list[tuple[str, int]]:
        """Each key with how many checks of it may run at once."""
        keys = [(self.account, ACCOUNT_PARALLEL)]
        return keys + ([(self.address, ADDRESS_PARALLEL)] if self.address is not None else [])


def claim(bind: Bind, c: Claim, now: datetime) -> None:
    """Claim an attempt under every key of `c`; Throttled when a key refuses (the caller rolls the
    transaction back, so no key stays claimed)."""
    raw = Raw(bind)
    for key, limit in c.keys:
        params = {
            "key": key,
            "now": raw.ts(now),
            "forget": raw.ts(now - FORGET_AFTER),
            "stuck": raw.ts(now - STUCK_AFTER),
            "limit": limit,
        }
        if raw.first(_CLAIM, params) is None:
            next_at = read_ts(raw.scalar(_NEXT_AT, {"key": key}))
            if next_at is not None and next_at > now:
                raise Throttled(max(1, math.ceil((next_at - now).total_seconds())))
            raise Throttled(None)


def failed(bind: Bind, c: Claim, now: datetime) -> None:
    """The password was wrong: count the failure under each key and make it wait accordingly."""
    raw = Raw(bind)
    for key, _limit in c.keys:
        failures = raw.scalar(_FAILED, {"key": key, "now": raw.ts(now)})
        if failures is not None:
            raw.run(_WAIT, {"key": key, "next": raw.ts(now + timedelta(seconds=wait_after(int(failures))))})
    raw.run(_SWEEP, {"forget": raw.ts(now - FORGET_AFTER), "now": raw.ts(now)})


def succeeded(bind: Bind, c: Claim) -> None:
    """The password was right: the account starts afresh; the address keeps its failures (an attacker
    with one good account cannot wipe what their address did to others)."""
    raw = Raw(bind)
    raw.run(_FORGET, {"key": c.account})
    if c.address is not None:
        raw.run(_DONE, {"key": c.address})


def release(bind: Bind, key: str) -> None:
    """Forget a key's failures (an admin lifting the wait of an account)."""
    Raw(bind).run(_FORGET, {"key": key})
