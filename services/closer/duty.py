"""The duty roster (值班), pure decisions: who is on duty for a street at an instant, is an instant out
of hours, which cases go to duty, and the roster's CSV format. No I/O (services/closer/dutystore.py
reads and writes the roster).

A shift is a UTC interval [start, end) of one street, held by a station or a staff account. With no
shift covering an instant, the street's operations centre (its centre station) is on duty.

CSV (`gridloop duty import FILE`, `POST /api/v1/duty/{street}/import`), one shift per row, header
required::

    street,date,start,end,station,staff
    yinhang,2027-02-05,18:00,09:00,yh-s1,
    yinhang,2027-02-06,00:00,24:00,,zhang.wei

`date` is the shift's first day (YYYY-MM-DD) and `start`/`end` are local times (HH:MM, the work time
zone); an `end` not after `start` is on the next day (a night across midnight), `24:00` is midnight at
the end of `date`. Exactly one of `station` (a station of that street) and `staff` (an active staff
account) is given. A file with any bad row is refused whole, each bad row named by its line number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from gridloop.clock import as_utc
from schemas.reference import Jurisdiction
from services.closer.sla import WorkCalendar

CSV_COLUMNS = ("street", "date", "start", "end", "station", "staff")
MAX_SHIFT = timedelta(days=7)
"""A longer shift is a typing error (a wrong date), not a roster."""

DutySource = Literal["roster", "centre"]


@dataclass(frozen=True)
class Shift:
    """Who holds duty for a street from `start` to `end` (UTC, end excluded): a station or an account."""

    street_id: str
    start: datetime
    end: datetime
    station_id: str | None = None
    username: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class OnDuty:
    """Who is on duty for a street at an instant, and whether the roster or the no-roster rule said so."""

    street_id: str
    station_id: str | None
    username: str | None
    source: DutySource
    until: datetime | None = None

    @property
    def label(self) -> str:
        """The holder as shown: the staff account, else the station."""
        return self.username or self.station_id or ""


class RosterError(ValueError):
    """A roster change or file refused; `problems` names each bad row (`line N: ...`)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def on_duty(shifts: Iterable[Shift], street_id: str, centre_station_id: str, at: datetime) -> OnDuty:
    """Who is on duty for `street_id` at `at`: the covering shift that started last (a later entry
    overrides a standing one; ties: the later id), else the street's operations centre."""
    at = as_utc(at)
    covering = [s for s in shifts if s.street_id == street_id and as_utc(s.start) <= at < as_utc(s.end)]
    if not covering:
        return OnDuty(street_id, centre_station_id, None, "centre")
    best = max(covering, key=lambda s: (as_utc(s.start), s.id or 0))
    return OnDuty(street_id, best.station_id, best.username, "roster", as_utc(best.end))


def out_of_hours(calendar: WorkCalendar, at: datetime) -> bool:
    """True when `at` is not working time on the street's calendar: a day off, or outside its windows."""
    at = as_utc(at)
    local = at.astimezone(calendar.tz)
    if not calendar.is_workday(local.date()):
        return True
    return not any(
        datetime.combine(local.date(), a, calendar.tz)
        <= local
        < datetime.combine(local.date(), b, calendar.tz)
        for a, b in calendar.windows
    )


def goes_to_duty(clock: str, calendar: WorkCalendar, at: datetime) -> bool:
    """A calendar-time case that is new or escalated out of hours goes to the duty queue; a
    working-time case waits for working hours (its clock stands still meanwhile)."""
    return clock == "calendar" and out_of_hours(calendar, at)


def span(day: date, start: time, end: time | None, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """A shift's UTC interval from its first day and local times; an end not after the start (or
    None, written 24:00) is on the next day."""
    lo = datetime.combine(day, start, tz)
    end_day = day if end is not None and end > start else day + timedelta(days=1)
    hi = datetime.combine(end_day, end or time(0), tz)
    return lo.astimezone(UTC), hi.astimezone(UTC)


def check_shift(shift: Shift, j: Jurisdiction, usernames: Collection[str]) -> list[str]:
    """What is wrong with a shift (empty: nothing)."""
    problems = []
    if shift.street_id not in j.streets:
        problems.append(f"unknown street {shift.street_id!r}")
    if (shift.station_id is None) == (shift.username is None):
        problems.append("give exactly one of station and staff")
    if shift.station_id is not None:
        station = j.stations.get(shift.station_id)
        if station is None or station.street_id != shift.street_id:
            problems.append(f"station {shift.station_id!r} is not a station of {shift.street_id!r}")
    if shift.username is not None and shift.username not in usernames:
        problems.append(f"no active staff account {shift.username!r}")
    if not as_utc(shift.start) < as_utc(shift.end):
        problems.append("the shift ends before it starts")
    elif as_utc(shift.end) - as_utc(shift.start) > MAX_SHIFT:
        problems.append("a shift is at most 7 days long")
    return problems


def _clock_time(text: str) -> time | None:
    """HH:MM; 24:00 is None (midnight at the end of the day)."""
    if text == "24:00":
        return None
    return time.fromisoformat(text)


def parse_csv(
    text: str, j: Jurisdiction, usernames: Collection[str], tz: ZoneInfo, street: str | None = None
) -> list[Shift]:
    """The shifts of a roster CSV, or RosterError naming every bad row (nothing is taken then).
    With `street`, every row must be of that street (an upload to one street's roster)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = tuple(h.strip() for h in reader.fieldnames or ())
    if header != CSV_COLUMNS:
        raise RosterError([f"line 1: the header must be {','.join(CSV_COLUMNS)}"])
    shifts: list[Shift] = []
    problems: list[str] = []
    for row in reader:
        line = reader.line_num
        values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if None in row:
            problems.append(f"line {line}: more than {len(CSV_COLUMNS)} columns")
            continue
        try:
            start_t = _clock_time(values["start"])
            if start_t is None:
                raise ValueError("start 24:00")
            lo, hi = span(date.fromisoformat(values["date"]), start_t, _clock_time(values["end"]), tz)
        except ValueError:
            problems.append(f"line {line}: date must be YYYY-MM-DD and start, end HH:MM")
            continue
        shift = Shift(values["street"], lo, hi, values["station"] or None, values["staff"] or None)
        wrong = check_shift(shift, j, usernames)
        if street is not None and shift.street_id != street:
            wrong.insert(0, f"the row is for {shift.street_id!r}, not {street!r}")
        problems += [f"line {line}: {p}" for p in wrong]
        shifts.append(shift)
    if problems:
        raise RosterError(problems)
    if not shifts:
        raise RosterError(["the file has no shifts"])
    return shifts
