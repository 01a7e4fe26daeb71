"""Staff accounts: creating them and checking a login (with slow-down and lock-out)."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError
from schemas.cases import ROLES, Role
from services.closer.auth import hash_password, verify_password
from services.closer.models import Staff

LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)
# a hash of a random password: unknown users cost as much time as known ones
_DUMMY_HASH = hash_password("gridloop-timing-equaliser")


def add_staff(
    session: Session, username: str, password: str, role: Role, stations: list[str], display_name: str = ""
) -> Staff:
    """Create an account (or reset an existing one's password, role and stations)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    staff = session.exec(select(Staff).where(Staff.username == username)).first()
    if staff is None:
        staff = Staff(username=username, password_hash="", role=role, created_at=utcnow())
    staff.password_hash = hash_password(password)
    staff.role = role
    staff.stations = ",".join(stations)
    staff.display_name = display_name or username
    staff.active = True
    staff.failed_logins = 0
    staff.locked_until = None
    session.add(staff)
    session.flush()
    return staff


def login_delay(failed: int) -> float:
    """Seconds to wait before answering a failed login: grows with each failure."""
    return min(0.25 * (2 ** max(failed - 1, 0)), 4.0) if failed else 0.0


def check_login(session: Session, username: str, password: str) -> tuple[Staff | None, float]:
    """Verify a login; returns (staff or None, delay to apply). Locked accounts answer 423-like 429."""
    staff = session.exec(select(Staff).where(Staff.username == username)).first()
    now = utcnow()
    if staff is None or not staff.active:
        verify_password(_DUMMY_HASH, password)
        return None, 0.5
    if staff.locked_until is not None and as_utc(staff.locked_until) > now:
        wait = int((as_utc(staff.locked_until) - now).total_seconds()) + 1
        raise ApiError(
            429,
            "account_locked",
            "Too many failed logins; try again later.",
            headers={"Retry-After": str(wait)},
        )
    if not verify_password(staff.password_hash, password):
        staff.failed_logins += 1
        if staff.failed_logins >= LOCK_AFTER:
            staff.locked_until = now + LOCK_FOR
        session.add(staff)
        return None, login_delay(staff.failed_logins)
    staff.failed_logins = 0
    staff.locked_until = None
    session.add(staff)
    return staff, 0.0
