"""Staff accounts: creating them, checking a sign-in (throttled, uniform answers), revoking tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from gridloop.clock import utcnow
from gridloop.db import Database
from gridloop.errors import ApiError
from gridloop.outbox import add_event
from gridloop.topics import STAFF_EVENTS
from schemas.cases import ROLES, Role
from schemas.events import StaffTokensRevoked, make_event
from schemas.reference import Jurisdiction
from services.closer import throttle
from services.closer.auth import hash_password, verify_password
from services.closer.models import PLUMBING, Staff

log = logging.getLogger(__name__)

# a hash of a random password: an unknown or disabled account costs the same argon2 check as a
# known one, so neither the answer nor its time tells which usernames exist
_DUMMY_HASH = hash_password("gridloop-timing-equaliser")


def bad_credentials() -> ApiError:
    """The one answer to every failed sign-in: unknown user, disabled account, wrong password."""
    return ApiError(
        401, "bad_credentials", "Wrong username or password.", headers={"WWW-Authenticate": "Bearer"}
    )


def too_many(retry_after: int) -> ApiError:
    """The answer to an attempt inside a throttle wait (the same for known and unknown accounts)."""
    return ApiError(
        429,
        "too_many_attempts",
        f"Too many failed sign-ins; try again in {retry_after} s.",
        {"retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def revoke(session: Session, staff: Staff, now: datetime) -> None:
    """End every token of an account: raise its token version and tell the other services
    (`staff.tokens_revoked` through the outbox, in the caller's transaction)."""
    staff.token_version += 1
    session.add(staff)
    session.flush()
    data = StaffTokensRevoked(
        username=staff.username, token_version=staff.token_version, active=staff.active, at=now
    )
    event = make_event("staff.tokens_revoked", data, source="closer", subject=staff.username, time=now)
    add_event(session, PLUMBING, STAFF_EVENTS, staff.username, event)


def add_staff(
    session: Session,
    username: str,
    password: str,
    role: Role,
    stations: list[str],
    display_name: str = "",
    streets: list[str] | None = None,
) -> Staff:
    """Create an account, or reset an existing one's password, role, stations and streets (which
    revokes its tokens)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    staff = session.exec(select(Staff).where(Staff.username == username)).first()
    existing = staff is not None
    if staff is None:
        staff = Staff(username=username, password_hash="", role=role, created_at=utcnow())
    staff.password_hash = hash_password(password)
    staff.role = role
    staff.stations = ",".join(stations)
    staff.streets = ",".join(streets or [])
    staff.display_name = display_name or username
    staff.active = True
    session.add(staff)
    session.flush()
    if existing:
        revoke(session, staff, utcnow())
    return staff


def check_places(j: Jurisdiction, role: str, stations: list[str], streets: list[str]) -> None:
    """ValueError naming what is wrong with an account's stations and streets: unknown ids, grid
    a city account tied to a street (it sees every street)."""
    unknown = [s for s in stations if s not in j.stations]
    if unknown:
        raise ValueError(f"unknown station: {', '.join(unknown)}")
    strange = [s for s in streets if s not in j.streets]
    if strange:
        raise ValueError(f"unknown street: {', '.join(strange)} (streets: {', '.join(j.streets)})")
    if role == "city" and (stations or streets):
        raise ValueError("a city account sees every street: give it no station and no street")


def demo_password_accounts(db: Database, usernames: Collection[str]) -> list[str]:
    """Those of `usernames` (the accounts demo loading creates) that are active and still have the
    demo password (`gridloop.demo.DEMO_PASSWORD`). Only those: an argon2 check per account, so a
    large deployment's start does not pay one for every account."""
    from gridloop.demo import DEMO_PASSWORD

    with db.session() as session:
        accounts = list(
            session.exec(select(Staff).where(Staff.active == True, col(Staff.username).in_(list(usernames))))  # noqa: E712
        )
    return [s.username for s in accounts if verify_password(s.password_hash, DEMO_PASSWORD)]


class UnsafeStart(RuntimeError):
    """The closer refuses to start: the message says why and what to do."""


def refuse_demo_passwords(db: Database, settings: Any, usernames: Collection[str]) -> None:
    """Stop the start while a demo account (`usernames`) is active with the demo password, unless
    the dev flag (GRIDLOOP_DEV) is set."""
    if settings.dev_mode:
        return
    names = demo_password_accounts(db, usernames)
    if names:
        message = (
            f"closer: refusing to start: {len(names)} active staff account(s) still have the demo password "
            f"({', '.join(sorted(names)[:10])}). Change their passwords (`gridloop staff add <name>`) or "
            "disable them (`gridloop staff disable <name>`); for a local demo set GRIDLOOP_DEV=1."
        )
        log.critical(message)
        raise UnsafeStart(message)


def disable_staff(session: Session, staff: Staff) -> None:
    """Disable an account: its tokens are refused at once, here and in every other service."""
    staff.active = False
    revoke(session, staff, utcnow())


@dataclass(frozen=True)
class SignedIn:
    """Who signed in: what their token carries."""

    username: str
    role: Role
    stations: list[str]
    version: int
    streets: list[str] = field(default_factory=list)
    """The streets given explicitly (the token carries gridloop.scope.account_streets of them)."""


QUEUE_SECONDS = 3.0  # how long an attempt queues behind the checks under way before it is 429


def _claim(db: Database, c: throttle.Claim) -> None:
    """Claim the attempt's keys; 429 while a key waits; queue briefly while a key's checks are busy."""
    deadline = time.monotonic() + QUEUE_SECONDS
    while True:
        try:
            with db.session(write=True) as session:
                throttle.claim(session, c, utcnow())
            return
        except throttle.Throttled as exc:  # the transaction rolled back: nothing stays claimed
            if exc.retry_after is None and time.monotonic() < deadline:
                time.sleep(0.05)  # another check of this account or address is under way
                continue
            raise too_many(exc.retry_after or 1) from exc


def check_password(db: Database, username: str, password: str, address: str | None) -> SignedIn:
    """Verify a sign-in under the throttle: the account, or 401 `bad_credentials` / 429."""
    c = throttle.Claim(throttle.account_key(username), throttle.address_key(address) if address else None)
    _claim(db, c)
    try:
        with db.session() as session:
            staff = session.exec(select(Staff).where(Staff.username == username)).first()
            usable = staff is not None and staff.active
            found = (
                SignedIn(staff.username, staff.role, staff.station_ids, staff.token_version, staff.street_ids)  # type: ignore[arg-type]
                if staff is not None and usable
                else None
            )
            password_hash = staff.password_hash if staff is not None and usable else _DUMMY_HASH
        # exactly one argon2 check on every path (outside any transaction: it takes a while)
        ok = verify_password(password_hash, password) and found is not None
    except BaseException:
        with db.session(write=True) as session:
            throttle.failed(session, c, utcnow())  # an attempt that broke counts as a failure
        raise
    with db.session(write=True) as session:
        if ok:
            throttle.succeeded(session, c)
        else:
            throttle.failed(session, c, utcnow())
    if not ok or found is None:
        raise bad_credentials()
    return found


def change_password(db: Database, username: str, current: str, new: str, address: str | None) -> SignedIn:
    """Change a password after checking the current one (throttled like a sign-in); revokes every
    token of the account. The answer carries the new token version."""
    if len(new) < 8:
        raise ApiError(
            422, "invalid_input", "new_password: at least 8 characters.", {"field": "new_password"}
        )
    check_password(db, username, current, address)
    with db.session(write=True) as session:
        staff = session.exec(select(Staff).where(Staff.username == username).with_for_update()).first()
        if staff is None or not staff.active:
            raise bad_credentials()
        staff.password_hash = hash_password(new)
        revoke(session, staff, utcnow())
        return SignedIn(staff.username, staff.role, staff.station_ids, staff.token_version, staff.street_ids)  # type: ignore[arg-type]


def sign_out(db: Database, username: str, version: int) -> int:
    """Revoke every token of an account whose token (at `version`) signs out; the new version."""
    with db.session(write=True) as session:
        staff = session.exec(select(Staff).where(Staff.username == username).with_for_update()).first()
        if staff is None:
            return version
        if staff.token_version == version:  # a second logout with the same token changes nothing
            revoke(session, staff, utcnow())
        return staff.token_version
