"""The duty roster's storage: read who is on duty, add and remove shifts, import a CSV whole.

Decisions are services/closer/duty.py's; this module only reads and writes `duty_shift` inside the
caller's transaction (the caller commits).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from gridloop.clock import as_utc
from schemas.reference import Jurisdiction
from services.closer import duty
from services.closer.models import DutyShift, Staff


def _shift(row: DutyShift) -> duty.Shift:
    return duty.Shift(
        row.street_id, as_utc(row.start_at), as_utc(row.end_at), row.station_id, row.username, row.id
    )


def centre_of(j: Jurisdiction, street_id: str | None) -> tuple[str, str]:
    """The street a case counts on (the default street when it has none) and its centre station."""
    street = j.streets.get(street_id or "") or j.streets[j.default_street_id]
    return street.id, street.centre_station_id


def current(session: Session, j: Jurisdiction, street_id: str | None, at: datetime) -> duty.OnDuty:
    """Who is on duty for a street at `at` (its centre when no shift covers it)."""
    street, centre = centre_of(j, street_id)
    rows = session.exec(
        select(DutyShift).where(
            DutyShift.street_id == street, col(DutyShift.end_at) > at, col(DutyShift.start_at) <= at
        )
    ).all()
    return duty.on_duty([_shift(r) for r in rows], street, centre, at)


def upcoming(session: Session, street_id: str, now: datetime, limit: int = 200) -> list[duty.Shift]:
    """A street's shifts not over yet, soonest first."""
    rows = session.exec(
        select(DutyShift)
        .where(DutyShift.street_id == street_id, col(DutyShift.end_at) > now)
        .order_by(col(DutyShift.start_at), col(DutyShift.id))
        .limit(limit)
    ).all()
    return [_shift(r) for r in rows]


def active_usernames(session: Session) -> set[str]:
    """The staff accounts that may hold duty."""
    return set(session.exec(select(Staff.username).where(col(Staff.active).is_(True))).all())


def _insert(session: Session, shifts: list[duty.Shift], by: str, now: datetime) -> list[int]:
    rows = [
        DutyShift(
            street_id=s.street_id,
            start_at=s.start,
            end_at=s.end,
            station_id=s.station_id,
            username=s.username,
            created_by=by,
            created_at=now,
        )
        for s in shifts
    ]
    session.add_all(rows)
    session.flush()
    return [r.id for r in rows if r.id is not None]


def add(session: Session, j: Jurisdiction, shift: duty.Shift, by: str, now: datetime) -> int:
    """Add one shift (RosterError when it is not valid); its id."""
    problems = duty.check_shift(shift, j, active_usernames(session))
    if problems:
        raise duty.RosterError(problems)
    return _insert(session, [shift], by, now)[0]


def import_csv(
    session: Session,
    j: Jurisdiction,
    text: str,
    tz: ZoneInfo,
    by: str,
    now: datetime,
    street: str | None = None,
) -> int:
    """Add every shift of a roster CSV, or none (RosterError names the bad rows); how many."""
    shifts = duty.parse_csv(text, j, active_usernames(session), tz, street)
    return len(_insert(session, shifts, by, now))


def remove(session: Session, street_id: str, shift_id: int) -> bool:
    """Remove one shift of a street; False when there is none."""
    row = session.get(DutyShift, shift_id)
    if row is None or row.street_id != street_id:
        return False
    session.delete(row)
    session.flush()
    return True
